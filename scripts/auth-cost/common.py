import socket, subprocess, time, json, urllib.request, os, statistics

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def varz(mport):
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/varz", timeout=5) as r:
        return json.load(r)

def cpu_seconds(pid):
    # utime+stime of the server process, in seconds
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def wait_ready(mport, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            varz(mport); return
        except Exception:
            time.sleep(0.02)
    raise RuntimeError("server not ready")

def start_server(conf, mport, log):
    p = subprocess.Popen([os.environ.get("NATS_SERVER_BIN", "nats-server"), "-c", conf, "-m", str(mport)],
                         stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_ready(mport)
    return p

def med(xs): return statistics.median(xs)
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
