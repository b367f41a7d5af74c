"""The bundled model out of the box: cold start of the main job, and warm throughput.

    python bench/bench_generate.py [--model default] [--repeats 3] [--batch 256]

Cold start: wall time of the README's main-job command (`dishgen generate "<caption>"`) in a fresh
process, from launch to the written PNG (target: under 5 s on a 2-core CPU). Warm: images per
second of the loaded model, batched (target: over 50 images/s at the model's size; the bundled
FastGAN makes 128 px images).

Peers, interleaved with each: for the cold start, a fresh ``python -c "import torch"`` (the floor
any torch program pays); for warm throughput, the bare network on the same noise and captions
(``G(z, c)`` and the conversion to PIL, captions encoded beforehand), so the ratio is the cost of
the generation interface. Ratios measured under load are marked unreliable.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import LoadWatch, median_ratio

CAPTIONS = [
    "Sarma, cabbage rolls served in a clay pot",
    "Ćevapi with chopped onions and flatbread",
    "Baklava with walnuts and syrup",
    "Goulash in a deep bowl",
]


def bare_network_call(generator, per_prompt: int):
    """The loaded network alone on the captions (encoded once, here) and fresh noise, batches of 64,
    converted to PIL: the peer of ``generator.generate``. ``None`` for a family without one here."""
    import torch

    from dishgen.images_tensor import tensor_to_pil

    if getattr(generator, "G", None) is not None:  # cGAN, FastGAN
        G = generator.G
        c = generator.text_encoder.encode(CAPTIONS).repeat_interleave(per_prompt, 0).to(generator.device,
                                                                                          generator.dtype)
        z = torch.randn(len(c), G.z_dim).to(generator.device, generator.dtype)

        def net(zb, cb):
            return G(zb, cb)
    elif getattr(getattr(generator, "model", None), "decoder", None) is not None:  # cVAE
        model = generator.model
        c = generator.text_inputs(CAPTIONS).repeat_interleave(per_prompt, 0)
        z = torch.randn(len(c), model.config.z_dim)

        def net(zb, cb):
            return model.decoder(zb, model.condition(cb)).clamp(-1, 1)
    else:
        return None

    @torch.inference_mode()
    def call():
        return [im for start in range(0, len(c), 64)
                for im in tensor_to_pil(net(z[start:start + 64], c[start:start + 64]).float())]
    call()  # warm-up
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    dishgen = Path(sys.executable).with_name("dishgen")

    cold, bare_import = [], []
    with tempfile.TemporaryDirectory() as out, LoadWatch() as load:
        for i in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True)
            bare_import.append(time.perf_counter() - start)
            start = time.perf_counter()
            done = subprocess.run([str(dishgen), "generate", CAPTIONS[0], "--model", args.model, "--seed", str(i),
                                   "--out", out], capture_output=True, text=True, check=True)
            cold.append(time.perf_counter() - start)
            assert Path(done.stdout.strip().splitlines()[-1]).is_file()
    print(f"cold start, caption -> PNG (fresh process): median {statistics.median(cold):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in cold)}; target < 5 s); a bare `import torch` process: "
          f"{statistics.median(bare_import):.2f} s, ratio {load.ratio(median_ratio(cold, bare_import))}")
    print(f"  {load.report()}")

    import torch

    from dishgen.generation import load_generator

    start = time.perf_counter()
    generator = load_generator(args.model)
    print(f"load in a warm process: {time.perf_counter() - start:.2f} s; torch threads {torch.get_num_threads()}")
    per_prompt = args.batch // len(CAPTIONS)
    generator.generate(CAPTIONS, num_images=2, seed=0)  # warm-up
    bare_network = bare_network_call(generator, per_prompt)
    rates, bare_rates = [], []
    with LoadWatch() as load:
        for r in range(args.repeats):
            start = time.perf_counter()
            images = generator.generate(CAPTIONS, num_images=per_prompt, seed=r)
            rates.append(len(images) / (time.perf_counter() - start))
            if bare_network is not None:
                start = time.perf_counter()
                bare_network()
                bare_rates.append(len(images) / (time.perf_counter() - start))
    size = images[0].size
    print(f"warm generation, {len(images)} images of {size[0]}x{size[1]} per call: median "
          f"{statistics.median(rates):.1f} images/s (runs: {', '.join(f'{x:.1f}' for x in rates)}; target > 50)")
    if bare_rates:
        print(f"bare network (captions encoded once) + PIL on the same batch: median {statistics.median(bare_rates):.1f} images/s; "
              f"interface / bare throughput {load.ratio(median_ratio(rates, bare_rates))}")
    print(f"  {load.report()}")


if __name__ == "__main__":
    main()
