# Measures the cost of adding agents under NATS JWT operator mode (switchyard auth). See
# BENCHMARKS.md "Adding identities" for how to run it and the figures.
"""JWT operator mode: mint cost, mint->first-publish latency, server RSS with many identities."""
import asyncio, os, shutil, subprocess, sys, time
import nats
from common import *

BIN = os.environ.get("SWITCHYARD_BIN", "target/release/switchyard")
D = os.environ.get("JWT_DIR", "/tmp/switchyard-auth-cost/jwt")
N_PRE = int(os.environ.get("N_PRE", 1000))
N_CONN = int(os.environ.get("N_CONN", 1000))

def add_agent(i):
    t = time.perf_counter()
    subprocess.run([BIN, "auth", "add-agent", i, "--dir", D], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t

async def connect_agent(i, port, **kw):
    return await nats.connect(f"nats://127.0.0.1:{port}", user_credentials=f"{D}/creds/agent-{i}.creds",
                              inbox_prefix=f"_INBOX_agent.{i}", allow_reconnect=False, **kw)

async def main():
    shutil.rmtree(D, ignore_errors=True)
    subprocess.run([BIN, "auth", "init", D], check=True, stdout=subprocess.DEVNULL)
    # (a) mint cost: first 50 calls timed individually, then the rest up to N_PRE, total measured
    t0 = time.perf_counter()
    per = [add_agent(f"a{k}") for k in range(50)]
    for k in range(50, N_PRE):
        add_agent(f"a{k}")
    total = time.perf_counter() - t0
    print(f"mint: median {med(per)*1000:.1f} ms p90 {pct(per,.9)*1000:.1f} ms min {min(per)*1000:.1f} ms over 50; total for {N_PRE}: {total:.1f} s")
    # server
    port, mport = free_port(), free_port()
    conf = f"{D}/server.conf"
    open(conf, "w").write(f'port: {port}\njetstream {{store_dir: "{D}/js"}}\ninclude "nats-auth.conf"\n')
    srv = start_server(conf, mport, f"{D}/server.log")
    try:
        v = varz(mport); print(f"server idle: rss {v['mem']/2**20:.1f} MiB, conns {v['connections']}")
        # privileged observer (optimizer role may subscribe coord.>) proves the publish was accepted
        got = {}
        obs = await nats.connect(f"nats://127.0.0.1:{port}", user_credentials=f"{D}/creds/optimizer-optimizer.creds",
                                 inbox_prefix="_INBOX_optimizer.optimizer")
        async def on_hb(m): got.setdefault(m.subject, time.perf_counter())
        await obs.subscribe("coord.heartbeat.*", cb=on_hb); await obs.flush()
        # (b) mint -> first accepted heartbeat, with N_PRE identities already existing
        lat, mint_part, errs = [], [], []
        for k in range(20):
            i = f"new{k}"; subj = f"coord.heartbeat.{i}"
            t = time.perf_counter()
            add_agent(i); tm = time.perf_counter()
            async def eh(e): errs.append(repr(e))
            nc = await connect_agent(i, port, error_cb=eh)
            await nc.publish(subj, b"hb"); await nc.flush()
            while subj not in got and time.perf_counter() - t < 5:
                await asyncio.sleep(0.0005)
            lat.append(got[subj] - t); mint_part.append(tm - t)
            await nc.close()
        print(f"mint->first heartbeat seen by observer: median {med(lat)*1000:.1f} ms p90 {pct(lat,.9)*1000:.1f} ms "
              f"(of which mint median {med(mint_part)*1000:.1f} ms; connect+pub+deliver median {med([a-b for a,b in zip(lat,mint_part)])*1000:.1f} ms) n=20 errors={errs}")
        # negative control: an agent publishing another agent's heartbeat must be refused
        denied = []
        async def eh2(e): denied.append(str(e))
        nc = await connect_agent("a1", port, error_cb=eh2)
        await nc.publish("coord.heartbeat.a2", b"x"); await nc.flush(); await asyncio.sleep(0.3)
        print(f"negative control a1->coord.heartbeat.a2 delivered={'coord.heartbeat.a2' in got} errors={denied}")
        await nc.close()
        # RSS with N_CONN connected identities (one python process)
        cpu0 = cpu_seconds(srv.pid); t = time.perf_counter()
        conns = []
        for k in range(N_CONN):
            c = await connect_agent(f"a{k}", port)
            await c.subscribe(f"coord.task_request.a{k}")
            conns.append(c)
        await asyncio.gather(*(c.flush() for c in conns))
        el = time.perf_counter() - t; cpu = cpu_seconds(srv.pid) - cpu0
        v = varz(mport)
        print(f"{N_CONN} identities connected (sequential) in {el:.1f} s, server CPU {cpu:.2f} s; rss {v['mem']/2**20:.1f} MiB, conns {v['connections']}, subs {v['subscriptions']}")
        for c in conns: await c.close()
        await obs.close()
    finally:
        srv.terminate(); srv.wait()

asyncio.run(main())
