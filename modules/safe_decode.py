"""Decoding inside the exported graph, bounded by a pixel budget read from the file header.

Why: the serving signatures decode whatever a client sends. A 389 KB PNG of 20000 x 20000
pixels decodes to 1.2 GB (4.8 GB as float32), and four at once took the server down. The
width and height are in the first bytes of a PNG (IHDR) and in a JPEG's SOF marker
(`tf.image.extract_jpeg_shape` parses only the header), so the graph checks them against
the budget before any large allocation, and fails with INVALID_ARGUMENT naming the size and
the limit. Formats other than PNG and JPEG (the contract's two) are rejected the same way.
"""

from __future__ import annotations

import tensorflow as tf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_BYTES = 24  # magic (8) + IHDR length and type (8) + width (4) + height (4)


def _big_endian(four_bytes: tf.Tensor) -> tf.Tensor:
    digits = tf.cast(tf.io.decode_raw(four_bytes, tf.uint8), tf.int64)
    return tf.reduce_sum(digits * tf.constant([2**24, 2**16, 2**8, 1], tf.int64))


def header_size(data: tf.Tensor, what: str) -> tf.Tensor:
    """(height, width) int64 of one encoded PNG or JPEG, from its header only."""
    is_png = tf.logical_and(
        tf.strings.length(data) >= _PNG_HEADER_BYTES,
        tf.equal(tf.strings.substr(data, 0, 8), PNG_MAGIC),
    )
    is_jpeg = tf.io.is_jpeg(data)
    known = tf.debugging.Assert(
        tf.logical_or(is_png, is_jpeg),
        [f"{what} is neither a PNG nor a JPEG file (the formats the model accepts)"],
    )
    with tf.control_dependencies([known]):

        def png() -> tf.Tensor:
            width = _big_endian(tf.strings.substr(data, 16, 4))
            height = _big_endian(tf.strings.substr(data, 20, 4))
            return tf.stack([height, width])

        def jpeg() -> tf.Tensor:
            return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

        return tf.cond(is_png, png, jpeg)


def check_budget(size: tf.Tensor, max_pixels: int, what: str) -> tf.Operation:
    """An assertion that height x width <= max_pixels, its message naming both."""
    message = tf.strings.format(
        what + " is {}x{} pixels, above the pixel budget of {} (max_image_pixels)",
        (size[1], size[0], max_pixels),
    )
    return tf.debugging.Assert(size[0] * size[1] <= max_pixels, [message])


def decode(data: tf.Tensor, channels: int, max_pixels: int, what: str) -> tf.Tensor:
    """uint8 [H, W, channels]; fails before decoding when the header is over the budget."""
    size = header_size(data, what)
    with tf.control_dependencies([check_budget(size, max_pixels, what)]):
        return tf.io.decode_image(data, channels=channels, expand_animations=False)
