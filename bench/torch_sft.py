"""PyTorch reference for bench/sft.ts: one full SFT step on the CPU (forward, masked cross-entropy with
ignore_index -100 averaged over trained tokens, backward, clip_grad_norm_(1.0), torch.optim.AdamW), on the same
Llama shapes as bench/torch_llama.py. Prints JSON {shape: {stepMs, stepSamples}}. TORCH_SHAPES=a,b picks shapes."""
import json, math, os, time
import torch

torch.set_num_threads(2)
SHAPES = {
    "stories260K": dict(dim=64, hidden=172, layers=5, heads=8, kv=4, vocab=512, batch=8, T=256),
    "stories15M": dict(dim=288, hidden=768, layers=6, heads=6, kv=6, vocab=32000, batch=2, T=256),
}

def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

def rope(x, pos):  # x (B, T, H, D), rotate_half layout
    d = x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, d, 2).float() / d)
    ang = pos[:, None].float() * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[None, :, None, :], torch.cat([ang.sin()] * 2, -1)[None, :, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin

def model(s, p, tok, pos):
    B, T = tok.shape
    H, KV = s["heads"], s["kv"]
    hd = s["dim"] // H
    x = p["emb"][tok]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for L in p["layers"]:
        h = rms(x, L["an"])
        q = rope((h @ L["wq"].T).view(B, T, H, hd), pos)
        k = rope((h @ L["wk"].T).view(B, T, KV, hd), pos).repeat_interleave(H // KV, 2)
        v = (h @ L["wv"].T).view(B, T, KV, hd).repeat_interleave(H // KV, 2)
        att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        x = x + (att @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, -1) @ L["wo"].T
        h = rms(x, L["fn"])
        x = x + (torch.nn.functional.silu(h @ L["w1"].T) * (h @ L["w3"].T)) @ L["w2"].T
    return rms(x, p["norm"]) @ p["emb"].T

def params(s):
    g = torch.Generator().manual_seed(0)
    r = lambda *sh: (torch.randn(*sh, generator=g) * 0.02).requires_grad_()
    kvd = s["kv"] * (s["dim"] // s["heads"])
    one = lambda: torch.ones(s["dim"], requires_grad=True)
    layers = [dict(an=one(), fn=one(), wq=r(s["dim"], s["dim"]), wk=r(kvd, s["dim"]), wv=r(kvd, s["dim"]), wo=r(s["dim"], s["dim"]),
                   w1=r(s["hidden"], s["dim"]), w2=r(s["dim"], s["hidden"]), w3=r(s["hidden"], s["dim"])) for _ in range(s["layers"])]
    return dict(emb=r(s["vocab"], s["dim"]), norm=one(), layers=layers)

out = {}
only = os.environ.get("TORCH_SHAPES")
for name, s in SHAPES.items():
    if only and name not in only.split(","):
        continue
    p = params(s)
    leaves = [p["emb"], p["norm"]] + [t for L in p["layers"] for t in L.values()]
    opt = torch.optim.AdamW(leaves, lr=1e-4, weight_decay=0.0)
    B, T = s["batch"], s["T"]
    tok = torch.arange(B * T).view(B, T) * 7919 % s["vocab"]
    labels = tok.clone()
    labels[:, : T // 2] = -100  # the prompt half is not trained, as in SFT
    pos = torch.arange(T)
    times = []
    for i in range(4 if name == "stories15M" else 6):
        t0 = time.perf_counter()
        logits = model(s, p, tok, pos)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(leaves, 1.0)
        opt.step()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1000)
    out[name] = dict(stepMs=sorted(times)[len(times) // 2], stepSamples=times)
print(json.dumps(out))
