"""Exporting a trained generator (ONNX, TorchScript) and running the exported graph (ONNX Runtime, OpenVINO)."""
