"""The joint network's serving signatures: the contract's inputs and outputs unchanged, in
one forward pass. Without a mask the head pools under the network's own lesion map and
`roi_mask` is that map post-processed as the two-stage segmenter's (threshold, the component
at the peak, dilation; `roi_source` "predicted", or "none" where it finds nothing usable);
a request's mask (research / ORACLE) replaces the map as the attention (`roi_source`
"given"). The explaining signatures add `lesion_probability`, the map itself."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from modules import contract as C
from modules.joint.explain import JointExplainer, predict_joint
from modules.joint.network import mask_side
from modules.model import Decision
from modules.options import TrainerOptions
from modules.segmenter import network as S
from modules.served_inputs import (
    EXAMPLES,
    IMAGE_BYTES,
    transform_features_signature,
    transformed_requests,
)
from modules.transform import decode_images, decode_masks, prepare_images


def roi_outputs(
    lesion: tf.Tensor, given: tf.Tensor, given_masks: tf.Tensor, post: S.RoiPostprocess
) -> dict[str, tf.Tensor]:
    """`roi_source` and `roi_mask` [B, 24, 24]: the request's mask where it carried one (all
    zero: the whole image), else the lesion map [B, m, m] post-processed."""
    masks, found = S.roi_from_probability(lesion[..., None], post)
    given_small = S.small_mask(S.whole_if_empty(given_masks))
    small = tf.where(given[:, None, None], given_small, S.small_mask(masks))
    source = tf.where(
        given,
        C.ROI_GIVEN,
        tf.where(found, tf.constant(C.ROI_PREDICTED), tf.constant(C.ROI_NONE)),
    )
    return {C.ROI_SOURCE: source, C.ROI_MASK: small}


def joint_signatures(
    model: keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    opts: TrainerOptions,
    decision: Decision,
) -> dict[str, Any]:
    """Every signature of the contract for the joint network: parse -> Transform graph (or
    the same `prepare_images` for raw bytes) -> one pass of the network -> explanation."""
    if decision.mirror_tta:
        raise ValueError("mirror_tta is not available with architecture=joint")
    model.tft_layer = tf_transform_output.transform_features_layer()
    explainer = JointExplainer(model)
    post = S.postprocess_of(opts)
    side = mask_side(opts.image_size)

    def parsed_inputs(serialized, ignore_masks: bool):
        transformed, given = transformed_requests(model, serialized, ignore_masks)
        images = decode_images(transformed[C.IMAGE], opts.image_size)
        return images, given, decode_masks(transformed[C.LESION_MASK], side)

    def answer(images, given, masks, explain: bool):
        out = predict_joint(explainer, images, decision, given, masks, explain)
        lesion = out[C.LESION_PROBABILITY]
        if not explain:
            out.pop(C.LESION_PROBABILITY)
        return {**out, **roi_outputs(lesion, given, masks, post)}

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def serve_examples(serialized):
        return answer(*parsed_inputs(serialized, ignore_masks=False), explain=True)

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def serve_predict_only(serialized):
        return answer(*parsed_inputs(serialized, ignore_masks=False), explain=False)

    @tf.function(autograph=False, input_signature=[EXAMPLES])
    def serve_no_mask(serialized):
        return answer(*parsed_inputs(serialized, ignore_masks=True), explain=False)

    @tf.function(autograph=False, input_signature=IMAGE_BYTES)
    def serve_images(image_bytes, mask_bytes):
        prepared = prepare_images(
            image_bytes, mask_bytes, opts.image_size, False, opts.max_pixels, side
        )
        images = tf.cast(prepared.image, tf.float32)
        given = tf.strings.length(mask_bytes) > 0
        return answer(images, given, prepared.mask, explain=True)

    return {
        C.SERVING_DEFAULT: serve_examples.get_concrete_function(),
        C.PREDICT_IMAGES: serve_images.get_concrete_function(),
        C.PREDICT_ONLY: serve_predict_only.get_concrete_function(),
        C.PREDICT_NO_MASK: serve_no_mask.get_concrete_function(),
        C.TRANSFORM_FEATURES: transform_features_signature(model, tf_transform_output),
    }
