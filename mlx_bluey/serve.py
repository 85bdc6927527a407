"""`mlx_bluey serve`: the browser chat page (mlx_bluey/web/) and exported models, on localhost.

    make web                                  # npm installs Transformers.js + onnxruntime-web once
    mlx_bluey serve exports/bluey-270m        # http://127.0.0.1:8000

Routes (nothing is fetched from anywhere else; the page sets Transformers.js to local files only):
    /                    web/index.html, app.js, worker.js (where Transformers.js runs), sampling.js, text.js, style.css
    /vendor/transformers.min.js     from web/node_modules/@huggingface/transformers/dist/
    /vendor/ort/FILE                onnxruntime-web's WASM runtime, from web/node_modules/onnxruntime-web/dist/
    /models.json         every served export: name, character, variants with sizes (from its export.json),
                         measured WASM speeds (web/speeds.json) and the default variant (default_variant)
    /models/NAME/...     the export directory NAME (config, tokenizer, onnx/...)

Every response carries Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy:
require-corp: without them the page is not cross-origin isolated, SharedArrayBuffer is missing and
onnxruntime-web runs on one thread.
"""

from __future__ import annotations

import json
import mimetypes
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

HOST = "127.0.0.1"  # localhost only unless asked: the page and the API have no authentication
PORT = 8000
WEB = Path(__file__).resolve().parent / "web"
# The page's JavaScript from npm: web/node_modules (`make web`), or for an installed wheel (which carries
# web/package.json but not the 140 MB of node_modules) the directory $MLX_BLUEY_WEB_MODULES names, e.g. after
# `npm ci --prefix DIR` with that package.json and its lock file in DIR.
WEB_MODULES_VARIABLE = "MLX_BLUEY_WEB_MODULES"
NODE = Path(os.environ.get(WEB_MODULES_VARIABLE) or WEB / "node_modules")
VENDOR = {
    "/vendor/transformers.min.js": NODE / "@huggingface" / "transformers" / "dist" / "transformers.min.js",
    "/vendor/ort/": NODE / "onnxruntime-web" / "dist",
}
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# The page's default on WASM is the fastest variant, by the page benchmark's measured decode speed
# (web/speeds.json, written by scripts/bench_browser.py), whose download is at most this many MB:
# what a visitor of a web page waits for (issue: "download <= 300 MB") ...
DOWNLOAD_LIMIT_MB = 300
# ... and whose top-1 agreement with the fused model (export.json's parity) is at least this: q8's on the
# 270M (0.933, benchmarks/export-270m), the level the issue asks the default to keep. A variant without a
# parity figure is not held to it.
PARITY_FLOOR = 0.93
SPEEDS = WEB / "speeds.json"
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")


class ServeError(Exception):
    pass


def measured_speeds() -> dict[str, float]:
    """Variant -> decode tok/s of the page on WASM, as the committed page benchmarks measured it."""
    if not SPEEDS.exists():
        return {}
    return {name: entry["decode_tokens_per_s"] for name, entry in json.loads(SPEEDS.read_text())["wasm"].items()}


def _parity_holds(top1: float | None) -> bool:
    return top1 is None or top1 >= PARITY_FLOOR


def default_variant(variants: list[dict], speeds: dict[str, float], limit_mb: float = DOWNLOAD_LIMIT_MB) -> str | None:
    """The fastest measured variant whose download fits limit_mb and whose parity reaches PARITY_FLOOR; else the
    smallest download (none measured fits)."""
    if not variants:
        return None
    fits = [
        v for v in variants if v["mb"] <= limit_mb and v["variant"] in speeds and _parity_holds(v.get("top1_agreement"))
    ]
    if fits:
        return max(fits, key=lambda v: speeds[v["variant"]])["variant"]
    return min(variants, key=lambda v: v["mb"])["variant"]


def describe_export(path: Path) -> dict:
    """What the page needs to know about one export directory."""
    report_path = path / "export.json"
    if not report_path.exists():
        raise ServeError(f"{path}: no export.json; make it with `mlx_bluey export`")
    report = json.loads(report_path.read_text())
    character = json.loads((path / "character.json").read_text()) if (path / "character.json").exists() else {}
    variants = [
        {
            "variant": v["variant"],
            "file": v["file"],
            # what Transformers.js is asked for: onnx/{model_file_name}{dtype's suffix}.onnx (exports written
            # before these keys existed used the variant's name as the dtype and "model")
            "dtype": v.get("dtype", v["variant"]),
            "model_file_name": v.get("model_file_name", "model"),
            "mb": v["mb"],
            "top1_agreement": v.get("parity", {}).get("top1_agreement"),
            "external_data": v.get("external_data", False),
            # onnxruntime session options the variant needs (int8: fold its DequantizeLinear nodes at load)
            "session_config": v.get("session_config", {}),
        }
        for v in report["variants"]
        if v["variant"] != "fp32"
    ]  # fp32 does not fit a browser tab
    speeds = measured_speeds()
    for v in variants:
        v["wasm_decode_tokens_per_s"] = speeds.get(v["variant"])
    return {
        "name": path.name,
        "character": character,
        "variants": variants,
        "default_variant": default_variant(variants, speeds),
    }


def check_vendor() -> None:
    missing = [str(p) for p in VENDOR.values() if not p.exists()]
    if missing:
        raise ServeError(
            f"the page's JavaScript is not installed ({missing[0]}): run `make web` in the checkout, or point "
            f"{WEB_MODULES_VARIABLE} at a node_modules made from {WEB / 'package.json'}"
        )


class Handler(SimpleHTTPRequestHandler):
    exports: dict[str, Path] = {}
    catalogue: bytes = b"[]"

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args) -> None:  # quiet: one line per request is noise while chatting
        pass

    def translate_path(self, path: str) -> str:
        route = unquote(urlparse(path).path)
        if route == "/":
            route = "/index.html"
        if route in VENDOR:
            return str(VENDOR[route])
        if route.startswith("/vendor/ort/"):
            return str(_inside(VENDOR["/vendor/ort/"], route[len("/vendor/ort/") :]))
        if route.startswith("/models/"):
            name, _, rest = route[len("/models/") :].partition("/")
            if name in self.exports:
                return str(_inside(self.exports[name], rest))
            return str(WEB / "missing")
        return str(
            _inside(
                WEB,
                route.lstrip("/"),
                allow=("index.html", "app.js", "worker.js", "sampling.js", "text.js", "style.css"),
            )
        )

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/models.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.catalogue)))
            self.end_headers()
            self.wfile.write(self.catalogue)
            return
        super().do_GET()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):  # a closed tab is not an error
            super().handle_error(request, client_address)


def _inside(root: Path, relative: str, allow: tuple[str, ...] | None = None) -> Path:
    """root/relative, or a path that does not exist when it would leave root (or is not allowed)."""
    target = (root / relative).resolve()
    if root.resolve() not in target.parents or (allow is not None and relative not in allow):
        return root / "missing"
    return target


def make_server(exports: list[Path], host: str = HOST, port: int = PORT) -> Server:
    check_vendor()
    if not exports:
        raise ServeError("give at least one export directory (from `mlx_bluey export`)")
    described = [describe_export(path) for path in exports]
    names = [d["name"] for d in described]
    if len(set(names)) != len(names):
        raise ServeError(f"two exports share a directory name: {names}")
    handler = type(
        "BoundHandler",
        (Handler,),
        {"exports": {p.name: p.resolve() for p in exports}, "catalogue": json.dumps(described).encode()},
    )
    return Server((host, port), partial(handler, directory=str(WEB)))


def serve(exports: list[Path], host: str, port: int, log=print) -> None:
    server = make_server(exports, host, port)
    log(f"Bluey's chat page: http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve_in_thread(exports: list[Path], host: str = HOST, port: int = 0) -> tuple[Server, str]:
    """For tests: a server on a free port, running until `server.shutdown()`."""
    server = make_server(exports, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"
