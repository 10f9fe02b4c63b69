"""Measuring models: parameter counts, FLOPs/MACs (correct for attention ops), throughput, memory.

    from zoo.profile import count_macs, profile_models, format_table
    report = profile_models(['zoo_swin_tiny'], input_size=224, batch_size=8, opts=BenchOptions(threads=2))
    print(format_table(report))

Convention everywhere: MACs (one multiply-accumulate = 1), FLOPs = 2 x MACs; the papers' "FLOPs" are MACs.
"""
from .flops import (CONVENTION, OP_HANDLES, count_macs, count_params, flop_report, make_inputs, materialize_zeros,
                    meta_parameters)
from .report import MEASURES, context, dump_json, format_table, profile_model, profile_models, resolve_names
from .speed import BenchOptions, add_bench_arguments, inference_throughput, latency, num_threads, peak_memory, train_throughput
