"""The applications, one file each."""
