"""The segmentation-assisted classifier (`architecture = joint`): one network that finds the
lesion and judges it, served in one forward pass. network.py builds it, data.py feeds it,
explain.py and signatures.py serve it."""
