"""Deployment: the deployable form of a model, its exported files, the runtimes that run them, and timing.

    forms      the deployable form (converted, optionally fused) and what goes to the runtimes
    export     ONNX (checked with onnxruntime) and TorchScript (checked on reload)
    openvino   OpenVINO IR, fp32 and int8 (NNCF)
    quantize   int8 calibration, onnxruntime int8 (QDQ), the quantizers' known log noise
    runtime    a deployed .onnx / .xml file loaded to run like a model
    timing     the one timing loop every latency and throughput figure comes from
    benchmark  latency, throughput, a training step and peak memory of a model
    compare    every runtime variant of a model beside timm's rexnet_100: files, latency, table

Imports graphs and utils only.
"""
