// The host emulator's yardstick: a straightforward double-precision implementation of the
// recurrent core's contract (charlstm/backends/contract.py, as charlstm/backends/reference.py
// computes it: h rounded to the input dtype each step, c in float, inactive rows keep state
// and write zeros), and the comparison of the emulated kernels' outputs with it.
// Test-only (see emu_main.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace emu {

// ------------------------------------------------------------------ dtype helpers (host)
float tof(float x) { return x; }
float tof(__half x) { return __half2float(x); }
float tof(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
T fromf(float x);
template <>
float fromf<float>(float x) {
  return x;
}
template <>
__half fromf<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__nv_bfloat16 fromf<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
std::vector<T> nan_vec(size_t n) {
  return std::vector<T>(n, fromf<T>(std::numeric_limits<float>::quiet_NaN()));
}

// ------------------------------------------------------------------ reference (double)
struct Ref {
  std::vector<double> hs, hT, cT, cs, gates, dgates, dh0, dc0;
};

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

template <typename T>
Ref reference(int Tn, int B, int H, const std::vector<T>& x, const std::vector<T>& w,
              const std::vector<T>& h0, const std::vector<T>& c0, const std::vector<int>* len,
              const std::vector<T>& dhs, const std::vector<T>& dhT, const std::vector<T>& dcT) {
  const int G = 4 * H;
  Ref r;
  r.hs.assign((size_t)Tn * B * H, 0);
  r.cs.assign((size_t)Tn * B * H, 0);
  r.gates.assign((size_t)Tn * B * G, 0);
  std::vector<double> h(B * H), c(B * H);
  for (int i = 0; i < B * H; ++i) h[i] = tof(h0[i]), c[i] = tof(c0[i]);
  for (int t = 0; t < Tn; ++t) {
    std::vector<double> hn(h), cn(c);
    for (int b = 0; b < B; ++b) {
      const bool act = !len || t < (*len)[b];
      for (int j = 0; j < H; ++j) {
        double z[4];
        for (int g = 0; g < 4; ++g) {
          double s = tof(x[((size_t)t * B + b) * G + g * H + j]);
          for (int k = 0; k < H; ++k)
            s += (double)tof(w[(size_t)(g * H + j) * H + k]) * h[b * H + k];
          z[g] = s;
        }
        const double ig = sig(z[0]), fg = sig(z[1]), gg = std::tanh(z[2]), og = sig(z[3]);
        const double cnew = fg * c[b * H + j] + ig * gg;
        const double hnew = tof(fromf<T>((float)(og * std::tanh(cnew))));
        double* gr = &r.gates[((size_t)t * B + b) * G];
        gr[j] = ig, gr[H + j] = fg, gr[2 * H + j] = gg, gr[3 * H + j] = og;
        if (act) hn[b * H + j] = hnew, cn[b * H + j] = cnew;
        r.hs[((size_t)t * B + b) * H + j] = act ? hnew : 0.0;
        r.cs[((size_t)t * B + b) * H + j] = cn[b * H + j];
      }
    }
    h = hn, c = cn;
  }
  r.hT = h, r.cT = c;
  for (auto& v : r.cT) v = tof(fromf<T>((float)v));
  // backward
  r.dgates.assign((size_t)Tn * B * G, 0);
  std::vector<double> dh(B * H), dc(B * H);
  for (int i = 0; i < B * H; ++i) dh[i] = tof(dhT[i]), dc[i] = tof(dcT[i]);
  for (int t = Tn - 1; t >= 0; --t) {
    std::vector<double> dz((size_t)B * G, 0.0), dcn(dc);
    for (int b = 0; b < B; ++b) {
      for (int j = 0; j < H; ++j) {
        const double* gr = &r.gates[((size_t)t * B + b) * G];
        const double ig = gr[j], fg = gr[H + j], gg = gr[2 * H + j], og = gr[3 * H + j];
        const double ct = r.cs[((size_t)t * B + b) * H + j];
        const double cp = t > 0 ? r.cs[((size_t)(t - 1) * B + b) * H + j] : tof(c0[b * H + j]);
        const double tc = std::tanh(ct);
        const double dht = dh[b * H + j] + tof(dhs[((size_t)t * B + b) * H + j]);
        const double dct = dc[b * H + j] + dht * og * (1 - tc * tc);
        double* d = &dz[(size_t)b * G];
        d[j] = dct * gg * ig * (1 - ig);
        d[H + j] = dct * cp * fg * (1 - fg);
        d[2 * H + j] = dct * ig * (1 - gg * gg);
        d[3 * H + j] = dht * tc * og * (1 - og);
        dcn[b * H + j] = dct * fg;
      }
    }
    for (int b = 0; b < B; ++b) {
      const bool act = !len || t < (*len)[b];
      if (!act) continue;
      for (int k = 0; k < H; ++k) {
        double s = 0;
        for (int rr = 0; rr < G; ++rr) s += dz[(size_t)b * G + rr] * tof(w[(size_t)rr * H + k]);
        dh[b * H + k] = s;
        dc[b * H + k] = dcn[b * H + k];
      }
      for (int rr = 0; rr < G; ++rr)
        r.dgates[((size_t)t * B + b) * G + rr] = dz[(size_t)b * G + rr];
    }
  }
  r.dh0 = dh, r.dc0 = dc;
  return r;
}

// ------------------------------------------------------------------ comparison
// Prints one line; returns whether every element is within tol (relative to the largest
// expected magnitude, at least 1) and the elements marked in exact_zero are exactly 0.
template <typename V>
bool compare(const char* name, const V& got, const std::vector<double>& want, double tol,
             const std::vector<char>* exact_zero = nullptr) {
  double maxerr = 0, scale = 1;
  size_t bad = 0, nonzero = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = tof(got[i]);
    const double e = std::fabs(g - want[i]);
    if (!(e <= tol * scale)) ++bad;  // NaN (never written) counts as bad
    if (std::isfinite(e)) maxerr = std::max(maxerr, e);
    if (exact_zero && (*exact_zero)[i] && g != 0.0) ++nonzero;
  }
  const bool ok = bad == 0 && nonzero == 0;
  std::printf("%s %-7s max_abs_err %.3g (tol %.3g) bad %zu inactive_nonzero %zu\n",
              ok ? "ok  " : "FAIL", name, maxerr, tol * scale, bad, nonzero);
  return ok;
}

}  // namespace emu
