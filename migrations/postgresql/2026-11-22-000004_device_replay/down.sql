DROP TABLE device_signatures;
