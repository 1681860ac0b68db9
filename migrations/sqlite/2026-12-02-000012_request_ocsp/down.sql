DROP TABLE request_evidence;
