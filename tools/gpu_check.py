#!/usr/bin/env python
"""One command for a GPU's first minutes (within 8 minutes on one GPU): every attention backend against the reference
(forward and backward, fp32 and bf16), a bf16-autocast training step of the smallest variant of every family, zoo vs
timm throughput (bf16, batch 64, 224; inference and training) on the headline pairs, and DiNAT-T on flex / NATTEN /
the tiled path. Writes gpu_check.json and gpu_check.md to --out; exits 1 if any check failed.

    python tools/gpu_check.py --out output/gpu_check                 # on a GPU
    python tools/gpu_check.py --device cpu --quick --out /tmp/check  # dry run: tiny shapes, one family (the tests run it)
    python tools/gpu_check.py --limit vs_timm=300 --limit dinat=90   # seconds per section (see zoo/profile/gpu_check.py)
    python tools/gpu_check.py --sections backends,dinat             # some sections only
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402,F401
from zoo.profile import dump_json  # noqa: E402
from zoo.profile.gpu_check import SECTIONS, format_checks, run_checks  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda')
    p.add_argument('--quick', action='store_true', help='tiny shapes, one family, one round: checks the plumbing')
    p.add_argument('--out', required=True, help='folder for gpu_check.json and gpu_check.md')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--limit', action='append', default=[], metavar='SECTION=SECONDS',
                   help='time limit of a section (backends, train, vs_timm, dinat)')
    p.add_argument('--sections', default=','.join(SECTIONS),
                   help=f'comma-separated sections to run (default: all of {",".join(SECTIONS)})')
    args = p.parse_args(argv)
    limits = {}
    for item in args.limit:
        name, _, seconds = item.partition('=')
        if name not in SECTIONS or not seconds.replace('.', '', 1).isdigit():
            p.error(f'--limit {item!r}: expected SECTION=SECONDS with SECTION one of {", ".join(SECTIONS)}')
        limits[name] = float(seconds)
    sections = [s for s in args.sections.split(',') if s]
    if not sections or set(sections) - set(SECTIONS):
        p.error(f'--sections {args.sections!r}: expected a comma-separated subset of {",".join(SECTIONS)}')
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            p.error('--device cuda but torch.cuda.is_available() is False (use --device cpu --quick for a dry run)')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(report):  # after every section: a run cut short keeps what it measured
        dump_json(report, str(out / 'gpu_check.json'), verbose=False)
        (out / 'gpu_check.md').write_text(format_checks(report) + '\n')

    report = run_checks(args.device, args.quick, limits, args.threads, log=lambda m: print(m, flush=True),
                        on_section=write, sections=sections)
    write(report)
    print(f'wrote {out / "gpu_check.json"} and {out / "gpu_check.md"}')
    return 1 if report['failures'] else 0


if __name__ == '__main__':
    sys.exit(main())
