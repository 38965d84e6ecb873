// The host emulator's yardstick: a straightforward double-precision implementation of the
// recurrent core's contract (charlstm/backends/contract.py) for every cell, as
// charlstm/backends/reference.py computes it -- one loop over the steps, a pointwise step per
// cell forward and backward; h rounded to the input dtype each step, inactive rows keep their
// state and write zeros -- and the comparison of the emulated kernels' outputs with it.
// The backward takes the saved tensors (hs, cs, gates) as arguments, as the contract's backward
// does, so the emulator feeds it the kernels' own: a forward difference can neither hide nor
// excuse a backward one (and relu's derivative is taken from the same saved h).
// Test-only (see emu_main.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "../launch_plan.h"

namespace emu {

// ------------------------------------------------------------------ dtype helpers (host)
inline float tof(float x) { return x; }
inline float tof(__half x) { return __half2float(x); }
inline float tof(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
T fromf(float x);
template <>
inline float fromf<float>(float x) {
  return x;
}
template <>
inline __half fromf<__half>(float x) {
  return __float2half_rn(x);
}
template <>
inline __nv_bfloat16 fromf<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
std::vector<T> nan_vec(size_t n) {
  return std::vector<T>(n, fromf<T>(std::numeric_limits<float>::quiet_NaN()));
}
template <typename V>
std::vector<double> to_double(const V& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = tof(v[i]);
  return out;
}

// ------------------------------------------------------------------ the problem
// The contract's inputs as doubles (the values of the D-typed tensors); b_hn empty for none.
struct Problem {
  int cell, Tn, B, H;
  std::vector<double> x, w, b_hn, h0, c0, dhs, dhT, dcT;
  const std::vector<int>* len;  // nullptr: every row runs all steps
  bool active(int t, int b) const { return !len || t < (*len)[b]; }
};

struct Ref {
  std::vector<double> hs, hT, cT, cs, gates;  // forward
  std::vector<double> dgates, dh0, dc0;       // backward
};

inline double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ------------------------------------------------------------------ pointwise steps
// Forward: x, a [G] (xproj[t] and h[t-1] @ W_hh^T of one (row, unit)), h, c the state, bias the
// GRU's b_hn -> h[t] before rounding, c[t], the saved values sv [S].
inline double step(int cell, const double* x, const double* a, double h, double c, double bias,
                   double* c_new, double* sv) {
  switch (cell) {
    case CHARLSTM_CELL_LSTM: {
      const double i = sig(x[0] + a[0]), f = sig(x[1] + a[1]), g = std::tanh(x[2] + a[2]),
                   o = sig(x[3] + a[3]);
      *c_new = f * c + i * g;
      sv[0] = i, sv[1] = f, sv[2] = g, sv[3] = o;
      return o * std::tanh(*c_new);
    }
    case CHARLSTM_CELL_GRU: {
      const double r = sig(x[0] + a[0]), z = sig(x[1] + a[1]), hn = a[2] + bias;
      const double n = std::tanh(x[2] + r * hn);
      sv[0] = r, sv[1] = z, sv[2] = n, sv[3] = hn;
      return (1 - z) * n + z * h;
    }
    case CHARLSTM_CELL_RNN_TANH: return sv[0] = std::tanh(x[0] + a[0]);
    default: return sv[0] = std::max(x[0] + a[0], 0.0);
  }
}

// Backward: dh (dh_next + dhs[t]), dc (LSTM), the saved values sv [S], c[t], c[t-1], h[t-1] ->
// dz [G] (d xproj), dhid [G] (d of h[t-1] @ W_hh^T), the part of dh[t-1] that bypasses W_hh,
// dc[t-1].
inline double step_back(int cell, double dh, double dc, const double* sv, double c_t,
                        double c_prev, double h_prev, double* dz, double* dhid, double* dc_prev) {
  const int G = charlstm::cell_gates(cell);
  double direct = 0;
  switch (cell) {
    case CHARLSTM_CELL_LSTM: {
      const double i = sv[0], f = sv[1], g = sv[2], o = sv[3], tc = std::tanh(c_t);
      dc += dh * o * (1 - tc * tc);
      dz[0] = dc * g * i * (1 - i);
      dz[1] = dc * c_prev * f * (1 - f);
      dz[2] = dc * i * (1 - g * g);
      dz[3] = dh * tc * o * (1 - o);
      *dc_prev = dc * f;
      break;
    }
    case CHARLSTM_CELL_GRU: {
      const double r = sv[0], z = sv[1], n = sv[2], hn = sv[3];
      const double dn = dh * (1 - z) * (1 - n * n);
      dz[0] = dn * hn * r * (1 - r);
      dz[1] = dh * (h_prev - n) * z * (1 - z);
      dz[2] = dn;
      direct = dh * z;
      break;
    }
    case CHARLSTM_CELL_RNN_TANH: dz[0] = dh * (1 - sv[0] * sv[0]); break;
    default: dz[0] = sv[0] > 0 ? dh : 0.0; break;
  }
  for (int g = 0; g < G; ++g) dhid[g] = dz[g];
  if (cell == CHARLSTM_CELL_GRU) dhid[2] = dz[2] * sv[0];
  return direct;
}

// ------------------------------------------------------------------ the recurrence
// Forward; `round` rounds h to the input dtype.
template <class Round>
void forward(const Problem& P, Round round, Ref* r) {
  const int G = charlstm::cell_gates(P.cell), S = charlstm::cell_saved(P.cell);
  const int Tn = P.Tn, B = P.B, H = P.H;
  const bool has_c = charlstm::cell_has_c(P.cell);
  r->hs.assign((size_t)Tn * B * H, 0);
  r->cs.assign(has_c ? (size_t)Tn * B * H : 0, 0);
  r->gates.assign((size_t)Tn * B * S * H, 0);
  std::vector<double> h(P.h0), c(has_c ? P.c0 : std::vector<double>(h.size(), 0.0));
  std::vector<double> x(G), a(G), sv(S);
  for (int t = 0; t < Tn; ++t) {
    std::vector<double> hn(h), cn(c);
    for (int b = 0; b < B; ++b) {
      for (int j = 0; j < H; ++j) {
        for (int g = 0; g < G; ++g) {
          x[g] = P.x[((size_t)t * B + b) * G * H + g * H + j];
          double s = 0;
          for (int k = 0; k < H; ++k) s += P.w[(size_t)(g * H + j) * H + k] * h[b * H + k];
          a[g] = s;
        }
        double c_new = 0;
        const double bias = P.b_hn.empty() ? 0.0 : P.b_hn[j];
        const double hnew = round(step(P.cell, x.data(), a.data(), h[b * H + j], c[b * H + j],
                                       bias, &c_new, sv.data()));
        for (int g = 0; g < S; ++g) r->gates[((size_t)t * B + b) * S * H + g * H + j] = sv[g];
        const bool act = P.active(t, b);
        if (act) hn[b * H + j] = hnew, cn[b * H + j] = c_new;
        r->hs[((size_t)t * B + b) * H + j] = act ? hnew : 0.0;
        if (has_c) r->cs[((size_t)t * B + b) * H + j] = cn[b * H + j];
      }
    }
    h = hn, c = cn;
  }
  r->hT = h;
  r->cT = has_c ? c : std::vector<double>();
  for (auto& v : r->cT) v = round(v);
}

// Backward from the saved tensors hs, cs, gates (the kernels' outputs, as doubles).
inline void backward(const Problem& P, const std::vector<double>& hs,
                     const std::vector<double>& cs, const std::vector<double>& gates, Ref* r) {
  const int G = charlstm::cell_gates(P.cell), S = charlstm::cell_saved(P.cell);
  const int Tn = P.Tn, B = P.B, H = P.H;
  const bool has_c = charlstm::cell_has_c(P.cell);
  r->dgates.assign((size_t)Tn * B * G * H, 0);
  std::vector<double> dh(P.dhT), dc(has_c ? P.dcT : std::vector<double>(dh.size(), 0.0));
  std::vector<double> dz((size_t)G * H), dhid((size_t)G * H), direct(H), dcp(H), sv(S), zg(G),
      hg(G);
  for (int t = Tn - 1; t >= 0; --t) {
    for (int b = 0; b < B; ++b) {
      if (!P.active(t, b)) continue;  // dgates stay 0, dh/dc pass through
      const size_t row = (size_t)t * B + b;
      for (int j = 0; j < H; ++j) {
        for (int g = 0; g < S; ++g) sv[g] = gates[row * S * H + g * H + j];
        const double c_t = has_c ? cs[row * H + j] : 0.0;
        const double c_prev = !has_c ? 0.0 : t > 0 ? cs[(row - B) * H + j] : P.c0[b * H + j];
        const double h_prev = t > 0 ? hs[(row - B) * H + j] : P.h0[b * H + j];
        direct[j] = step_back(P.cell, dh[b * H + j] + P.dhs[row * H + j], dc[b * H + j],
                              sv.data(), c_t, c_prev, h_prev, zg.data(), hg.data(), &dcp[j]);
        for (int g = 0; g < G; ++g) dz[g * H + j] = zg[g], dhid[g * H + j] = hg[g];
      }
      for (int k = 0; k < H; ++k) {
        double s = direct[k];
        for (int rr = 0; rr < G * H; ++rr) s += dhid[rr] * P.w[(size_t)rr * H + k];
        dh[b * H + k] = s;
        if (has_c) dc[b * H + k] = dcp[k];
      }
      std::copy(dz.begin(), dz.end(), r->dgates.begin() + row * G * H);
    }
  }
  r->dh0 = dh;
  r->dc0 = has_c ? dc : std::vector<double>();
}

// ------------------------------------------------------------------ comparison
// Prints one line; returns whether every element is within tol (relative to the largest
// expected magnitude, at least 1) and the elements marked in exact_zero are exactly 0.
template <typename V>
bool compare(const char* name, const V& got, const std::vector<double>& want, double tol,
             const std::vector<char>* exact_zero = nullptr) {
  double maxerr = 0, scale = 1;
  size_t bad = 0, nonzero = 0;
  if (got.size() != want.size()) {
    std::printf("FAIL %-7s size %zu, expected %zu\n", name, got.size(), want.size());
    return false;
  }
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
