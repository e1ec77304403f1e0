"""Helpers shared by every test folder: data files, API steps, HTML parsing, the worker."""
