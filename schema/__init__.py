"""The curated schema of the raw examples, shipped as package data so an installed copy of
LesionLens (not only a checkout) can hand it to ImportSchemaGen."""

from importlib.resources import files


def schema_path() -> str:
    """Filesystem path of schema.pbtxt inside the installed package."""
    return str(files(__name__).joinpath("schema.pbtxt"))
