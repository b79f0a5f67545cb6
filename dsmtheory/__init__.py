"""dsmtheory: exact scores and small DSM-trained models for checking whether
diffusion models learn hidden inter-feature rules (see THEORY.md in shared/)."""

__version__ = "0.1.0"
