"""Check that an x86-64 build of the extension runs on a baseline (SSE2) CPU: every
instruction beyond the baseline must sit in a run-time-dispatched kernel.

    python tools/check_simd.py path/to/_core....so

The dispatched kernels are the functions compiled under `#pragma GCC target(...)` in
csrc/kernels_simd.c; their names end in _avx2 / _avx512 (GCC may add .constprop.N, .part.N,
.isra.N).  Needs the symbol table: run it on the unstripped extension of the CMake build tree
(tools/build_wheels.sh checks that its .text equals the wheel's).  Flags:

  * outside the dispatched kernels: any VEX/EVEX instruction (mnemonic v*: AVX and up), any
    ymm/zmm/k-mask register, and SSE3/SSSE3/SSE4.x/BMI/LZCNT/MOVBE mnemonics (listed by name;
    a baseline build emits none);
  * inside the *_avx2 kernels: any AVX-512 (zmm, k masks, xmm/ymm16-31, {1toN} broadcasts);
  * an epoch driver without its prefetches: no prefetcht0 (the next mini-batch's targets) or
    no prefetcht1 (its input rows) in the float or in the double driver's
    functions (names ending in _f32 / _f64) outside the kernels.  GCC deletes calls to a
    function whose only effects are prefetches (csrc/net_impl.h: prefetch_next), which no
    test of results can see.

Exit status 1 on any finding, 2 when the file has no symbols to attribute code to.
"""
import re
import subprocess
import sys
from collections import Counter, defaultdict

WIDE = re.compile(r"%[yz]mm\d+|%k[1-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")
AVX512 = re.compile(r"%zmm|%k[1-7]\b|\{1to\d+\}|%[xy]mm(1[6-9]|2\d|3[01])\b")
NON_BASELINE = set("""
 pshufb phaddw phaddd phsubw phsubd pabsb pabsw pabsd palignr pmaddubsw pmulhrsw psignb
 addsubps addsubpd haddps haddpd hsubps hsubpd lddqu movddup movshdup movsldup
 blendps blendpd blendvps blendvpd dpps dppd insertps extractps pblendw pblendvb pextrb pextrd
 pextrq pinsrb pinsrd pinsrq pminsb pmaxsb pminuw pmaxuw pminud pmaxud pminsd pmaxsd pmulld
 pmuldq ptest roundps roundpd roundss roundsd pcmpeqq pcmpgtq packusdw pmovsxbw pmovzxbw
 pmovsxwd pmovzxwd pmovsxdq pmovzxdq movntdqa mpsadbw phminposuw crc32 pcmpestri pcmpistri
 andn bextr blsi blsmsk blsr bzhi pdep pext rorx sarx shlx shrx mulx lzcnt tzcnt movbe
""".split())
DISPATCHED = re.compile(r"_(avx2|avx512)(\.|$)")


def instructions(lines):
    """(function, mnemonic, instruction) for each instruction of objdump -d output."""
    func = None
    for line in lines:
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            func = m.group(1)
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or func is None or not parts[1].strip():
            continue
        insn = parts[1].strip()
        yield func, insn.split()[0], insn


def scan(lines):
    """{function: Counter(kind -> count)} of the non-baseline instructions in objdump -d output."""
    per_func = defaultdict(Counter)
    for func, mnem, insn in instructions(lines):
        if (mnem.startswith("v") and mnem not in ("verr", "verw")) or WIDE.search(insn) \
                or mnem.split(".")[0] in NON_BASELINE:
            per_func[func]["avx512" if AVX512.search(insn) else "other"] += 1
    return per_func


def prefetches(lines):
    """Counter((dtype, mnemonic)) of the prefetch instructions outside the dispatched kernels,
    dtype "f32" or "f64" from the driver function's name (net_impl.h's NET(name))."""
    out = Counter()
    for func, mnem, _ in instructions(lines):
        dtype = re.search(r"_(f32|f64)(\.|$)", func)
        if mnem.startswith("prefetch") and dtype and not DISPATCHED.search(func):
            out[dtype.group(1), mnem] += 1
    return out


def main(path):
    syms = subprocess.run(["nm", path], capture_output=True, text=True)
    if syms.returncode or not re.search(r" [tT] \S+_(avx2|avx512)\b", syms.stdout):
        print(f"{path}: no symbols of the dispatched kernels (stripped?): cannot attribute code")
        return 2
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "att", path],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    per_func = scan(dis)
    bad, avx2_with_512, dispatched = [], [], Counter()
    for f, c in sorted(per_func.items()):
        m = DISPATCHED.search(f)
        if not m:
            bad.append((f, dict(c)))
            continue
        dispatched[m.group(1)] += sum(c.values())
        if m.group(1) == "avx2" and c["avx512"]:
            avx2_with_512.append((f, dict(c)))
    print(f"{len(per_func)} functions hold non-baseline instructions: "
          f"{dispatched['avx2']} instructions in *_avx2 kernels, {dispatched['avx512']} in "
          f"*_avx512 kernels, {sum(sum(c.values()) for _, c in bad)} elsewhere")
    for f, c in bad:
        print(f"FAIL: non-baseline instructions outside the dispatched kernels: {f} {c}")
    for f, c in avx2_with_512:
        print(f"FAIL: AVX-512 in an avx2 kernel: {f} {c}")
    pf = prefetches(dis)
    print("prefetches outside the kernels: " +
          (", ".join(f"{n} {m}_{t}" for (t, m), n in sorted(pf.items())) or "none"))
    missing = [f"{m} in the {t} driver" for t in ("f32", "f64")
               for m in ("prefetcht0", "prefetcht1") if not pf[t, m]]
    if missing:
        print(f"FAIL: no {', no '.join(missing)}: the epoch's prefetches were compiled away")
    return 1 if bad or avx2_with_512 or missing else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
