"""Conv/Linear + ReLU6 (hardtanh/clamp) as one quantized op for the PT2E quantizers (XNNPACK, litert-torch).

Both quantizers fuse conv + ReLU but treat hardtanh as an op that *shares* its input's quantization
parameters. So a ReLU6 network (MobileNetV2, EfficientNet-Lite) gets its post-clamp activations quantized
with the pre-clamp conv output's range: on EfficientNet-Lite0 the stem conv's output spans [-82, 66], which
leaves about 10 int8 levels for the [0, 6] the clamp lets through, and plain PTQ agreed with FP32 on about
half of the photos. Quantizing the clamp's output instead (range [0, 6], the conv's output left
unobserved) is what both runtimes execute anyway: XNNPACK and TFLite run conv with a fused min/max clamp.

No quantizer option does this (torchao's annotators match conv + relu only), hence this small annotator,
run before the quantizer's own ones (which skip nodes already annotated).
"""

from __future__ import annotations

from typing import Any

HEAVY = ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default")
CLAMPS = ("aten.hardtanh.default", "aten.hardtanh_.default", "aten.clamp.default", "aten.relu6.default")


def annotate_fused_clamps(gm: Any, config: Any, skip: Any = None) -> int:
    """Annotate every conv/linear whose only user is a clamp as one quantized op; returns how many.
    `skip(node)` true: a layer kept float on purpose (host.analyze's fallback), left unannotated."""
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )

    key = "quantization_annotation"
    if config is None or getattr(config, "input_activation", None) is None:
        return 0   # dynamic or weight-only configs quantize no activations: nothing to fuse

    def annotated(n: Any) -> bool:
        return key in n.meta and n.meta[key]._annotated

    fused = 0
    for clamp in gm.graph.nodes:
        if clamp.op != "call_function" or str(clamp.target) not in CLAMPS:
            continue
        op = clamp.args[0]
        if not (isinstance(op, Node) and op.op == "call_function" and str(op.target) in HEAVY and len(op.users) == 1):
            continue
        if annotated(op) or annotated(clamp) or not isinstance(op.args[1], Node) or (skip and skip(op)):
            continue
        qspecs = {op.args[0]: get_input_act_qspec(config), op.args[1]: get_weight_qspec(config)}
        bias = op.args[2] if len(op.args) > 2 else None
        if isinstance(bias, Node):
            qspecs[bias] = get_bias_qspec(config)
        op.meta[key] = QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
        clamp.meta[key] = QuantizationAnnotation(output_qspec=get_output_act_qspec(config), _annotated=True)
        fused += 1
    return fused


def float_layer_filter(float_layers: list[str]) -> Any:
    """A node filter, true for nodes outside the given module paths (torchao's own module-name matching).
    XNNPACKQuantizer.set_module_name(name, None) is "not supported yet" in ExecuTorch 1.5, its filter
    function is how a layer is kept float."""
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    inside = [get_module_name_filter(m) for m in float_layers]
    return lambda n: not any(f(n) for f in inside)


def with_fused_clamps(quantizer: Any, float_layers: Any = None) -> Any:
    """The quantizer, annotating conv/linear + clamp pairs (with its global config) before its own patterns;
    modules named in `float_layers` stay float (neither annotator touches them), through the quantizer's own
    filter: XNNPACK's set_filter_function; litert-torch's static annotators given torchao's module-name filter.
    (litert-torch 0.10's set_module_name refuses None, and its own name filter strips a fixed "L__self___"
    prefix and maps "_" to ".", which matches no module of torch 2.13's nn_module_stack: the "float" head of a
    test net stayed int8.)"""
    own = quantizer.annotate
    keep = float_layer_filter(list(float_layers)) if float_layers else None
    if keep is not None:
        if hasattr(quantizer, "set_filter_function"):
            quantizer.set_filter_function(keep)
        else:
            def static_patterns(model: Any) -> Any:
                return quantizer._annotate_all_static_patterns(model, quantizer.global_config, keep)

            quantizer._annotate_for_static_quantization_config = static_patterns

    def annotate(model: Any) -> Any:
        annotate_fused_clamps(model, getattr(quantizer, "global_config", None),
                              skip=(lambda n: not keep(n)) if keep else None)
        return own(model)

    quantizer.annotate = annotate
    return quantizer
