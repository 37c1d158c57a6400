"""PyTorch reference for bench/llama.ts: the same Llama shapes, written the same way, timed the same way.
Prints JSON {shape: {stepMs, stepSamples, prefillTokS, decode1, decode8}}. Run only when `import torch` works.
On the CPU (2 threads) by default; TORCH_DEVICE=cuda runs it on the GPU, synchronising before each reading.
TORCH_SHAPES=a,b runs only those shapes."""
import json, math, os, time
import torch

torch.set_num_threads(2)
DEV = torch.device(os.environ.get("TORCH_DEVICE", "cpu"))
sync = torch.cuda.synchronize if DEV.type == "cuda" else (lambda: None)
SHAPES = {
    "stories260K": dict(dim=64, hidden=172, layers=5, heads=8, kv=4, vocab=512, batch=8, T=256),
    "stories15M": dict(dim=288, hidden=768, layers=6, heads=6, kv=6, vocab=32000, batch=4, T=256),
}

def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

def rope(x, pos):  # x (B, T, H, D), rotate_half layout
    d = x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, d, 2, device=DEV).float() / d)
    ang = pos[:, None].float() * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[None, :, None, :], torch.cat([ang.sin()] * 2, -1)[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin

def model(s, p, tok, pos):
    B, T = tok.shape
    H, KV = s["heads"], s["kv"]
    hd = s["dim"] // H
    x = p["emb"][tok]
    for L in p["layers"]:
        h = rms(x, L["an"])
        q = rope((h @ L["wq"].T).view(B, T, H, hd), pos)
        k = rope((h @ L["wk"].T).view(B, T, KV, hd), pos)
        v = (h @ L["wv"].T).view(B, T, KV, hd)
        k = k.repeat_interleave(H // KV, 2)
        v = v.repeat_interleave(H // KV, 2)
        att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) / math.sqrt(hd)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=DEV), 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        o = (att @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, -1)
        x = x + o @ L["wo"].T
        h = rms(x, L["fn"])
        x = x + (torch.nn.functional.silu(h @ L["w1"].T) * (h @ L["w3"].T)) @ L["w2"].T
    return rms(x, p["norm"]) @ p["emb"].T

def params(s):
    g = torch.Generator().manual_seed(0)
    r = lambda *sh: (torch.randn(*sh, generator=g) * 0.02).to(DEV).requires_grad_()
    kvd = s["kv"] * (s["dim"] // s["heads"])
    layers = [dict(an=torch.ones(s["dim"], device=DEV, requires_grad=True), fn=torch.ones(s["dim"], device=DEV, requires_grad=True),
                   wq=r(s["dim"], s["dim"]), wk=r(kvd, s["dim"]), wv=r(kvd, s["dim"]), wo=r(s["dim"], s["dim"]),
                   w1=r(s["hidden"], s["dim"]), w2=r(s["dim"], s["hidden"]), w3=r(s["hidden"], s["dim"])) for _ in range(s["layers"])]
    return dict(emb=r(s["vocab"], s["dim"]), norm=torch.ones(s["dim"], device=DEV, requires_grad=True), layers=layers)

def median(xs):
    return sorted(xs)[len(xs) // 2]

out = {}
only = os.environ.get("TORCH_SHAPES")
for name, s in SHAPES.items():
    if only and name not in only.split(","):
        continue
    p = params(s)
    leaves = [p["emb"], p["norm"]] + [t for L in p["layers"] for t in L.values()]
    tok = (torch.arange(s["batch"] * s["T"]).view(s["batch"], s["T"]) * 7919 % s["vocab"]).to(DEV)
    tgt = ((torch.arange(s["batch"] * s["T"]).view(s["batch"], s["T"]) * 104729 + 3) % s["vocab"]).to(DEV)
    pos = torch.arange(s["T"], device=DEV)
    times, cpu = [], []
    for i in range(3 if name == "stories15M" else 4):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = torch.nn.functional.cross_entropy(model(s, p, tok, pos).flatten(0, 1), tgt.flatten())
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            for w, g in zip(leaves, grads):
                w -= 1e-3 * g
        sync()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    with torch.no_grad():
        pre = []
        for i in range(3):
            t0 = time.perf_counter(); model(s, p, tok[:1], pos); sync()
            if i > 0: pre.append(time.perf_counter() - t0)
        def decode(b, n=16):  # no KV cache in this reference: a full forward per token, as a lower bound on PyTorch
            seq = torch.ones(b, 3, dtype=torch.long, device=DEV)
            t0 = time.perf_counter()
            for _ in range(n):
                nxt = model(s, p, seq, torch.arange(seq.shape[1], device=DEV))[:, -1].argmax(-1)
                seq = torch.cat([seq, nxt[:, None]], 1)
            sync()
            return n * b / (time.perf_counter() - t0)
        out[name] = dict(stepMs=median(times), stepSamples=times, cpuSamples=cpu, prefillTokS=s["T"] / median(pre), decode1=decode(1), decode8=decode(8))
print(json.dumps(out))
