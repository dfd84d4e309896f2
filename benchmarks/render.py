"""Renderer speed: batch of 8 faces at 256x256, full shading, forward + backward, against deodr.

    python benchmarks/render.py [--batch 8] [--size 256] [--vertices 25000] [--repeats 3] [--profile]
                                [--device cpu|cuda]

Ours renders the batch in one call (diffuse + specular albedo maps, tangent-space normal map, order-2
SH + one directional light, Blinn-Phong) and back-propagates an L1 image loss to vertices, textures and
lights. deodr (CPU, Cython) renders the same meshes one image at a time with per-vertex colours, a
directional + ambient light and its edge antialiasing, forward + backward to vertices and colours.
Ours runs on ``--device`` (default: CUDA when available, else CPU; CUDA times are synchronised and the
peak GPU memory of one full-shading step is printed); deodr always runs on the CPU, as it only can.
Times are the median over ``--repeats`` runs after one warm-up. ``--profile`` also prints the operators
that take the most time in one full-shading forward + backward (torch.profiler), to see where time goes.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np
import torch

from fitdiff.face.template import make_procedural_shape_model
from fitdiff.render import DirectionalLights, PerspectiveCamera, Renderer, ambient_sh, look_at

log = logging.getLogger("benchmarks.render")


def _median_ms(fn, repeats: int, device: torch.device | None = None) -> float:
    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--vertices", type=int, default=25000)
    parser.add_argument("--texture", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fov", type=float, default=22.0)
    parser.add_argument("--no-deodr", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print the top operators of one full-shading step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where ours runs (default: cuda when available)")
    args = parser.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    model = make_procedural_shape_model(n_vertices=args.vertices, n_components=50)
    batch, size, tex = args.batch, args.size, args.texture
    with torch.no_grad():
        verts0 = model(torch.randn(batch, model.n_components) * 0.7).float()
    faces, uvs, uv_faces = model.faces, model.uvs.float(), model.uv_faces
    eye = torch.tensor([0.0, 20.0, 650.0]).expand(batch, 3)
    rot, trans = look_at(eye, torch.tensor([0.0, 0.0, 40.0]))
    cam = PerspectiveCamera.from_fov(rot.to(dev), trans.to(dev), (size, size), args.fov)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    log.info("settings: batch %d, image %dx%d, mesh %d vertices / %d triangles, textures %dx%d, "
             "torch %s, ours on %s", batch, size, size, verts0.shape[1], faces.shape[0], tex, tex,
             torch.__version__, where)

    diffuse = torch.rand(batch, 3, tex, tex)
    specular = torch.rand(batch, 1, tex, tex) * 0.5
    normals = torch.nn.functional.normalize(
        torch.randn(batch, 3, tex, tex) * 0.1 + torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1), dim=1
    )
    sh = ambient_sh(0.6, batch)
    sh[:, 1:4] = 0.2
    light_dir = torch.tensor([[0.4, 0.5, 1.0]]).expand(batch, 3).clone()
    target = torch.rand(batch, 3, size, size)
    renderer = Renderer((size, size), shininess=32.0)
    on_dev = [t.to(dev) for t in (verts0, faces, uvs, uv_faces, diffuse, specular, normals, sh, light_dir, target)]
    verts_d, faces_d, uvs_d, uv_faces_d, diffuse_d, specular_d, normals_d, sh_d, light_dir_d, target_d = on_dev

    def ours_step(backward: bool = True) -> torch.Tensor:
        leaves = [t.detach().requires_grad_(backward)
                  for t in (verts_d, diffuse_d, specular_d, normals_d, sh_d, light_dir_d)]
        v, d, s, n, c, ld = leaves
        out = renderer(v, faces_d, cam, uvs=uvs_d, uv_faces=uv_faces_d, diffuse=d, specular=s, normals=n,
                       sh_coeffs=c, lights=DirectionalLights(ld, intensity=torch.full((batch, 1), 0.5, device=dev)))
        if backward:
            (out.image - target_d).abs().mean().backward()
        return out.alpha

    coverage = float(ours_step(False).mean())
    fwd = _median_ms(lambda: ours_step(False), args.repeats, dev)
    total = _median_ms(ours_step, args.repeats, dev)
    log.info("ours:  forward %.1f ms, forward+backward %.1f ms per batch of %d (%.1f ms / image); "
             "face covers %.0f%% of the image", fwd, total, batch, total / batch, 100 * coverage)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        ours_step()
        log.info("ours:  peak GPU memory of one full-shading forward+backward %.0f MiB",
                 torch.cuda.max_memory_allocated(dev) / 2**20)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities, record_shapes=True) as prof:
            ours_step()
        sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=20))

    colors0 = torch.rand(batch, verts0.shape[1], 3, device=dev)

    def ours_vertex_colour_step() -> None:
        v, c, ld = (t.detach().requires_grad_(True) for t in (verts_d, colors0, light_dir_d))
        out = renderer(v, faces_d, cam, vertex_colors=c, lights=DirectionalLights(ld))
        (out.image - target_d).abs().mean().backward()

    simple = _median_ms(ours_vertex_colour_step, args.repeats, dev)
    log.info("ours, deodr-like shading (vertex colours + 1 directional light): forward+backward %.1f ms "
             "per batch of %d", simple, batch)

    if args.no_deodr:
        return
    try:
        from deodr import ColoredTriMesh, Scene3D
        from deodr.differentiable_renderer import Camera as DeodrCamera
    except ImportError:
        log.info("deodr not installed: no comparison")
        return
    # deodr's camera is OpenCV style (x right, y down, z forward): flip our view y and z axes.
    flip = np.diag([1.0, -1.0, -1.0])
    fy = float(cam.fy[0])
    intrinsic = np.array([[fy, 0, size / 2], [0, fy, size / 2], [0, 0, 1.0]])
    scenes = []
    colors = np.random.default_rng(0).random((verts0.shape[1], 3))
    for b in range(batch):
        ext = np.column_stack([flip @ rot[b].double().numpy(), flip @ trans[b].double().numpy()])
        mesh = ColoredTriMesh(faces.numpy().astype(np.int32), verts0[b].double().numpy(), colors=colors)
        scene = Scene3D(sigma=1.0)
        scene.set_mesh(mesh)
        scene.set_background_color([0.0, 0.0, 0.0])
        scene.set_light(light_directional=np.array([-0.3, -0.4, -0.8]), light_ambient=0.4)
        scenes.append((scene, DeodrCamera(extrinsic=ext, intrinsic=intrinsic, width=size, height=size)))
    target_np = target.permute(0, 2, 3, 1).double().numpy()

    def deodr_step() -> None:
        for b, (scene, camera) in enumerate(scenes):
            image = scene.render(camera)
            scene.clear_gradients()
            scene.render_backward(np.sign(image - target_np[b]) / image.size)

    deodr_cov = float((scenes[0][0].render(scenes[0][1]).sum(-1) > 0).mean())
    d_total = _median_ms(deodr_step, args.repeats)
    log.info("deodr: forward+backward %.1f ms for %d images (%.1f ms / image); face covers %.0f%%",
             d_total, batch, d_total / batch, 100 * deodr_cov)
    log.info("speed-up (deodr / ours, forward+backward, batch of %d): full shading %.2fx, "
             "deodr-like shading %.2fx", batch, d_total / total, d_total / simple)


if __name__ == "__main__":
    main()
