"""Fused GPU kernels (Triton). Imported only when a kernel is used: `import vit_core` never imports triton."""
