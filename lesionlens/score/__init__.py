"""`lesionlens score`: batch scoring of images with a pushed SavedModel on Apache Beam."""
