"""Basalt: erasure-coded S3 object storage, NBD block volumes, KVM compute."""

__version__ = "0.1.0"  # the fallback when the distribution metadata is missing
