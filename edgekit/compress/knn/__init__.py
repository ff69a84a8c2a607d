"""k-NN slicing: cut a trained CNN after a conv block and classify its features with k-NN
(slice, head, features, cut points, the ONNX path, the search over cuts)."""
