"""Starts the real modelwatch daemon (the binary `cargo build` made) on a loopback port 0."""
import os
import shutil
import signal
import subprocess
import tempfile

import grpc
import pytest

from modelwatch.v1 import modelwatch_pb2_grpc as pb_grpc

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def daemon_binary():
    path = os.environ.get("MODELWATCH_BIN") or os.path.join(ROOT, "target", "debug", "modelwatch")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `cargo build` first (make test does)")
    return path


class Daemon:
    def __init__(self, data_dir, listen="127.0.0.1:0", env_extra=None):
        self.data_dir = data_dir
        env = dict(os.environ, MODELWATCH_LOG="warn", MODELWATCH__SAMPLING__HOST_INTERVAL="0s", MODELWATCH__SAMPLING__SELF_INTERVAL="0s", MODELWATCH__SAMPLING__GPU="off")
        env.update(env_extra or {})
        self.proc = subprocess.Popen([daemon_binary(), "serve", "--listen", listen, "--http-listen", "127.0.0.1:0", "--data-dir", data_dir],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"daemon did not start: {line!r} {self.proc.stderr.read()}")
        self.addr = line.split()[-1]
        self.channel = grpc.insecure_channel(self.addr)
        self.query = pb_grpc.QueryStub(self.channel)

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0

    def kill9(self):
        self.channel.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def data_dir():
    d = tempfile.mkdtemp(prefix="modelwatch-py-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(data_dir):
    d = Daemon(data_dir)
    yield d
    if d.proc.poll() is None:
        d.stop()
