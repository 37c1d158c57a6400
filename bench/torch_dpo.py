"""PyTorch reference for bench/dpo.ts: one DPO step on the CPU with LoRA (r 8, alpha 16) on the seven projections:
the policy forward and backward over the N chosen and N rejected rows in one batch, the reference = the base with
the adapters off under no_grad, summed log-probs of the trained labels, -logsigmoid(beta * delta) with beta 0.1,
clip_grad_norm_(1.0), torch.optim.AdamW on the adapters. Shapes as bench/torch_llama.py. Prints JSON
{shape: {stepMs, stepSamples}}. TORCH_SHAPES=a,b picks shapes."""
import json, math, os, time
import torch
import torch.nn.functional as F

torch.set_num_threads(2)
SHAPES = {
    "stories260K": dict(dim=64, hidden=172, layers=5, heads=8, kv=4, vocab=512, pairs=4, T=256),
    "stories15M": dict(dim=288, hidden=768, layers=6, heads=6, kv=6, vocab=32000, pairs=1, T=256),
}
R, ALPHA, BETA = 8, 16.0, 0.1

def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

def rope(x, pos):
    d = x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, d, 2).float() / d)
    ang = pos[:, None].float() * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[None, :, None, :], torch.cat([ang.sin()] * 2, -1)[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin

def lin(h, L, name, ad):
    y = h @ L[name].T
    if ad is not None:
        A, B = ad[name]
        y = y + (h @ A.T) @ B.T * (ALPHA / R)
    return y

def model(s, p, ads, tok, pos):
    B, T = tok.shape
    H, KV = s["heads"], s["kv"]
    hd = s["dim"] // H
    x = p["emb"][tok]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i, L in enumerate(p["layers"]):
        ad = ads[i] if ads is not None else None
        h = rms(x, L["an"])
        q = rope(lin(h, L, "wq", ad).view(B, T, H, hd), pos)
        k = rope(lin(h, L, "wk", ad).view(B, T, KV, hd), pos).repeat_interleave(H // KV, 2)
        v = lin(h, L, "wv", ad).view(B, T, KV, hd).repeat_interleave(H // KV, 2)
        att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        x = x + lin((att @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, -1), L, "wo", ad)
        h = rms(x, L["fn"])
        x = x + lin(F.silu(lin(h, L, "w1", ad)) * lin(h, L, "w3", ad), L, "w2", ad)
    return rms(x, p["norm"]) @ p["emb"].T

def seq_logps(logits, labels):
    lg, lb = logits[:, :-1], labels[:, 1:]
    mask = lb != -100
    lp = torch.gather(lg.log_softmax(-1), 2, lb.clamp(min=0)[..., None])[..., 0]
    return (lp * mask).sum(-1)

out = {}
only = os.environ.get("TORCH_SHAPES")
for name, s in SHAPES.items():
    if only and name not in only.split(","):
        continue
    g = torch.Generator().manual_seed(0)
    r = lambda *sh: torch.randn(*sh, generator=g) * 0.02
    kvd = s["kv"] * (s["dim"] // s["heads"])
    shapes = dict(wq=(s["dim"], s["dim"]), wk=(kvd, s["dim"]), wv=(kvd, s["dim"]), wo=(s["dim"], s["dim"]), w1=(s["hidden"], s["dim"]), w2=(s["dim"], s["hidden"]), w3=(s["hidden"], s["dim"]))
    p = dict(emb=r(s["vocab"], s["dim"]), norm=torch.ones(s["dim"]),
             layers=[dict(an=torch.ones(s["dim"]), fn=torch.ones(s["dim"]), **{k: r(*sh) for k, sh in shapes.items()}) for _ in range(s["layers"])])
    ads = [{k: ((torch.rand(R, sh[1], generator=g) * 2 - 1).div(math.sqrt(sh[1])).requires_grad_(), torch.zeros(sh[0], R, requires_grad=True)) for k, sh in shapes.items()} for _ in range(s["layers"])]
    leaves = [t for a in ads for pair in a.values() for t in pair]
    opt = torch.optim.AdamW(leaves, lr=1e-4, weight_decay=0.0)
    N, T = s["pairs"], s["T"]
    idx = torch.arange(2 * N * T)
    tok = ((idx + (idx // (N * T)) * 13) * 7919 % s["vocab"]).view(2 * N, T)
    labels = tok.clone()
    labels[:, : T // 2] = -100
    pos = torch.arange(T)
    times = []
    for i in range(4 if name == "stories15M" else 6):
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = seq_logps(model(s, p, None, tok, pos), labels)
        pol = seq_logps(model(s, p, ads, tok, pos), labels)
        delta = (pol[:N] - pol[N:]) - (ref[:N] - ref[N:])
        loss = -F.logsigmoid(BETA * delta).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(leaves, 1.0)
        opt.step()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1000)
    out[name] = dict(stepMs=sorted(times)[len(times) // 2], stepSamples=times)
print(json.dumps(out))
