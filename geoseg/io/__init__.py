"""Every file access: rasters (read, write, publish whole), vectors, districts, labels, stacks and mosaics."""
