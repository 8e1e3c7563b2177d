"""The Files API: upload, list, retrieve, download and delete files."""
