"""The revisions, one file each (a package, so a regular install ships them too)."""
