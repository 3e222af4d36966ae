"""TF Serving's REST JSON tensor encoding, shared by the dev server and `RestClient`.

Why: scripts written for TF Serving (curl, the REST client) must work unchanged against the dev
server, so the row ("instances") and columnar ("inputs") formats, ``{"b64": ...}`` binary
strings, the ``*_bytes`` output rule and the error texts follow
tensorflow_serving/util/json_tensor.cc. No TensorFlow import: dtypes are numpy dtypes, with
``object`` standing for DT_STRING.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"  # string outputs so named are written as {"b64": ...}
_DEBUG_CHARS = 300  # TF Serving echoes whole values; a b64 image would flood the message


class JsonRequestError(ValueError):
    """A malformed REST body; the server answers INVALID_ARGUMENT (HTTP 400) with this text."""


def _debug(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _DEBUG_CHARS else text[:_DEBUG_CHARS] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def tf_type_name(dtype: np.dtype) -> str:
    """DataTypeString() of the TF dtype a numpy dtype stands for."""
    if dtype == np.dtype(object):
        return "string"
    return {"float32": "float", "float64": "double"}.get(dtype.name, dtype.name)


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _format_error(doc: Any, *parts: str) -> JsonRequestError:
    return JsonRequestError(f"JSON Value: {_debug(doc)} " + "".join(parts))


def _leaf(value: Any, dtype: np.dtype) -> Any:
    if dtype == np.dtype(object):
        if isinstance(value, dict):
            if not is_b64(value):
                raise _format_error(value, "not formatted correctly for base64 data")
            try:
                return base64.b64decode(value[B64_KEY], validate=True)
            except (binascii.Error, ValueError):
                raise JsonRequestError("Unable to base64 decode") from None
        if isinstance(value, str):
            return value.encode("utf-8")
    elif dtype == np.dtype(bool):
        if isinstance(value, bool):
            return value
    elif dtype.kind == "f":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    elif dtype.kind in "iu":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise JsonRequestError(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} "
        f"is not of expected type: {tf_type_name(dtype)}"
    )


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: np.dtype, flat: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise JsonRequestError(
                f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        flat.append(_leaf(value, dtype))
        return
    if level >= rank:
        raise JsonRequestError(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise JsonRequestError(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, flat)


def json_to_array(value: Any, dtype: np.dtype) -> np.ndarray:
    """One JSON tensor value (nested lists, scalars, {"b64"}) -> numpy array of `dtype`."""
    dtype = np.dtype(dtype)
    shape = _dense_shape(value)
    flat: list[Any] = []
    _fill(value, 0, shape, dtype, flat)
    if dtype == np.dtype(object):
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=dtype).reshape(shape)


def array_to_json(array: np.ndarray, as_b64: bool) -> Any:
    """A numpy array -> JSON value; strings become {"b64": ...} when `as_b64`, else UTF-8 text."""
    array = np.asarray(array)
    if array.dtype.kind in "OSU":

        def convert(item: Any) -> Any:
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            if as_b64:
                return {B64_KEY: base64.b64encode(data).decode("ascii")}
            return data.decode("utf-8", errors="replace")

        if array.ndim == 0:
            return convert(array.item())
        return np.vectorize(convert, otypes=[object])(array).tolist()
    return array.tolist()


def parse_body(body: bytes) -> dict[str, Any]:
    """The request document; JSON errors worded like TF Serving's rapidjson parser."""
    if not body:
        raise JsonRequestError("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise JsonRequestError(
            f"JSON Parse error: invalid UTF-8 at offset: {error.start}"
        ) from None
    except json.JSONDecodeError as error:
        raise JsonRequestError(f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional "signature_name" key ('' = serving_default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise JsonRequestError(
            f"JSON Value: {_debug(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _add_instance_item(
    value: Any,
    name: str,
    dtypes: Mapping[str, np.dtype],
    rows: dict[str, list[np.ndarray]],
) -> None:
    if name not in dtypes:
        raise JsonRequestError(f"JSON object: does not have named input: {name}")
    array = json_to_array(value, dtypes[name])
    if rows.get(name):
        first = rows[name][0]
        if first.size != array.size:
            raise JsonRequestError(f"Expecting tensor size: {first.size} but got: {array.size}")
        if first.shape != array.shape:
            raise JsonRequestError(
                f"Expecting shape {list(first.shape)} but got: {list(array.shape)}"
            )
    rows.setdefault(name, []).append(array)


def _from_instances(instances: Any, doc: Any, dtypes: Mapping[str, np.dtype]) -> dict:
    if not isinstance(instances, list):
        raise _format_error(doc, "Expecting 'instances' to be an list/array")
    if not instances:
        raise _format_error(doc, "No values in 'instances' array")
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise JsonRequestError(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

    def is_object(value: Any) -> bool:
        return isinstance(value, dict) and not is_b64(value)

    objects = is_object(instances[0])
    rows: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        if objects:
            if not is_object(element):
                raise JsonRequestError(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, value in element.items():
                try:
                    _add_instance_item(value, name, dtypes, rows)
                except JsonRequestError as error:
                    raise JsonRequestError(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: INVALID_ARGUMENT: {error}"
                    ) from None
            if set(element) != set(dtypes):
                raise JsonRequestError(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_debug(element)} keys must be equal to: {','.join(sorted(dtypes))}"
                )
        else:
            if is_object(element):
                raise JsonRequestError(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_instance_item(element, sorted(dtypes)[0], dtypes, rows)
            except JsonRequestError as error:
                raise JsonRequestError(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: {error}"
                ) from None
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _from_inputs(inputs: Any, dtypes: Mapping[str, np.dtype]) -> dict:
    if not isinstance(inputs, dict) or is_b64(inputs):
        if len(dtypes) > 1:
            raise JsonRequestError(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = sorted(dtypes)[0]
        return {name: json_to_array(inputs, dtypes[name])}
    arrays = {}
    for name, dtype in sorted(dtypes.items()):
        if name not in inputs:
            raise JsonRequestError(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = json_to_array(inputs[name], dtype)
    return arrays


def request_arrays(
    doc: Mapping[str, Any], dtypes: Mapping[str, np.dtype]
) -> tuple[dict[str, np.ndarray], str]:
    """Input arrays of a predict body, and its format: "row" (instances) or "columnar" (inputs)."""
    if "instances" in doc and "inputs" in doc:
        raise _format_error(
            doc,
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if "instances" in doc:
        return _from_instances(doc["instances"], doc, dtypes), "row"
    if "inputs" in doc:
        return _from_inputs(doc["inputs"], dtypes), "columnar"
    raise JsonRequestError("Missing 'inputs' or 'instances' key")


def response_json(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """{"predictions": [...]} for row requests, {"outputs": ...} for columnar ones."""
    if fmt == "columnar":
        values = {n: array_to_json(a, n.endswith(BYTES_SUFFIX)) for n, a in outputs.items()}
        return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
    batch = -1
    for name, array in outputs.items():
        if np.ndim(array) == 0:
            raise JsonRequestError(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and len(array) != batch:
            raise JsonRequestError(
                f"Tensor name: {name} has inconsistent batch size: {len(array)} "
                f"expecting: {batch}"
            )
        batch = len(array)
    columns = {n: array_to_json(a, n.endswith(BYTES_SUFFIX)) for n, a in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    return {"predictions": [{n: col[i] for n, col in columns.items()} for i in range(batch)]}


def output_value_to_array(value: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """A JSON output value -> numpy: {"b64"} and JSON strings -> bytes (object arrays, as
    gRPC's DT_STRING), floats -> float32, ints -> int64, unless `dtype` (the output's known
    dtype) says otherwise.

    REST carries no dtypes; float32/int64 are what most LesionLens outputs are. A DT_STRING
    output not named ``*_bytes`` comes as UTF-8 text (TF Serving's rule), and is encoded
    back to bytes here, so both transports answer the same.
    """
    if is_b64(value) or (isinstance(value, list) and _first_leaf_is_b64(value)):
        return _decode_b64_tree(value)
    array = np.asarray(value)
    if array.dtype.kind == "U":
        flat = np.empty(array.size, dtype=object)
        flat[:] = [text.encode("utf-8") for text in array.ravel().tolist()]
        return flat.reshape(array.shape)
    if dtype is not None and array.dtype.kind in "fiub":
        return array.astype(dtype)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def _first_leaf_is_b64(value: list) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return is_b64(value)


def _decode_b64_tree(value: Any) -> np.ndarray:
    def decode(item: Any) -> Any:
        if isinstance(item, list):
            return [decode(v) for v in item]
        return base64.b64decode(item[B64_KEY])

    return np.array(decode(value), dtype=object)
