"""Shared plumbing of the partner API: authentication, the error envelope, strict input."""
