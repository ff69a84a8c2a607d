"""ONNX -> OpenVINO IR (.xml + .bin), FP32 or FP16 (``compress_to_fp16``)."""
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency

XML = "model.xml"


def to_openvino(onnx_path, out_dir, precision="fp16"):
    """Convert an ONNX file to IR in ``out_dir`` (model.xml/model.bin); returns the xml path."""
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependency("openvino is not installed: pip install 'edgekit[openvino]'") from None
    if precision not in ("fp32", "fp16"):
        raise EdgekitError("OpenVINO IR export supports fp32 and fp16 (int8: edgekit compress "
                           "--method quantize)")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure etc. name the op
        raise EdgekitError("OpenVINO conversion failed: {}".format(
            str(exc).strip().splitlines()[0][:300])) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out / XML), compress_to_fp16=(precision == "fp16"))
    return out / XML
