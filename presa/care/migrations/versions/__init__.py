"""The care store's revisions, oldest first (``r0001_...``)."""
