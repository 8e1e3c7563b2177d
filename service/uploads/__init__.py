"""The Uploads API: files of up to 8 GB sent in parts of up to 64 MB, joined on ``complete``."""
