"""Zone data: master files, static RRsets, DIs and their policy files."""
