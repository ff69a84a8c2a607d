"""Exporters: Keras -> ONNX / TFLite / OpenVINO IR, each followed by a parity check."""
