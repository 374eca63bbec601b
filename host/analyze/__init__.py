"""Per-layer int8 numerics, sensitivity ranking and the fallback search (issue 11).

One backend per platform (`pt2e.py` for executorch, `onnx_qdq.py` for tensorrt) knows how to build that
platform's quantized graph with some layers kept float, how to run it on the host, and how to compare each
layer's output with FP32 using the library's own tool. `sensitivity.py` ranks layers and caches results;
`fallback.py` keeps the most sensitive layers float until an agreement budget holds; `report.py` prints.
"""
