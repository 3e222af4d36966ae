"""Ingestion: image folders (BUSI / MRI layouts) -> split TFRecords of raw tf.Examples."""
