"""Pipeline definition and its single configuration object."""
