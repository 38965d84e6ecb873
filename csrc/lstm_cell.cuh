// The LSTM cell: the kernels' parameters and the pointwise update of one (batch row, unit)
// pair in each direction, which every path (FMA or tensor-core matmul, persistent or stepwise)
// calls once the recurrent matmul of that pair is summed.  What a path computes before the
// call (the sums) and how it exchanges state between steps lives in the other files.
//
// Forward: gates i, f, g, o from z = xproj[t] + h[t-1] @ W_hh^T, c[t] = f*c[t-1] + i*g in
// float32, h[t] = o*tanh(c[t]) rounded to the input dtype; rows past their length keep their
// state and write hs = 0.  Saved for the backward: cs (c[t], float32) and gates (activated,
// float32).  Backward: the (b, j)-local derivative of that update from the saved values.
#pragma once

#include "device_common.cuh"

namespace charlstm {

// ---------------------------------------------------------------- parameters
template <typename T>
struct FwdParams {
  const T* xproj;      // [T, B, 4H]
  const T* w;          // [4H, H]
  const T* h0;         // [B, H]
  const T* c0;         // [B, H]
  const int* lengths;  // [B] or nullptr
  T* hs;               // [T, B, H]
  T* hT;               // [B, H]
  T* cT;               // [B, H]
  float* cs;           // [T, B, H]
  float* gates;        // [T, B, 4H]
  T* hbuf;             // [2, B, H]: h state, double-buffered by step parity
  unsigned* counter;   // grid barrier arrivals (persistent path)
  int Tn, B, H;
};

template <typename T>
struct BwdParams {
  const T* dhs;        // [T, B, H]
  const T* dhT;        // [B, H]
  const T* dcT;        // [B, H]
  const T* wt;         // [H, 4H] (w_hh transposed)
  const T* c0;         // [B, H]
  const float* cs;     // [T, B, H]
  const float* gates;  // [T, B, 4H]
  const int* lengths;  // [B] or nullptr
  T* dgates;           // [T, B, 4H]
  T* dh0;              // [B, H]
  T* dc0;              // [B, H]
  float* dzbuf;        // [2, B, 4H]: dz exchange, double-buffered by step parity
  float* dcbuf;        // [B, H]: dc carried between steps (each element owned by one thread)
  unsigned* counter;
  int Tn, B, H;
};

// ---------------------------------------------------------------- forward cell update
// Lane-level: z sums (without xproj) for row b, unit j at step t; h_prev is the D-typed state.
template <typename T>
__device__ __forceinline__ void fwd_cell(const FwdParams<T>& p, int t, int b, int j, float si,
                                         float sf, float sg, float so, T h_prev, T* hdst) {
  const int H = p.H, B = p.B;
  const long long G = 4LL * H;
  const long long row = (long long)t * B + b;
  const T* xr = p.xproj + row * G;
  const float ig = sigmoidf_(si + to_f(xr[j]));
  const float fg = sigmoidf_(sf + to_f(xr[H + j]));
  const float gg = tanhf(sg + to_f(xr[2 * H + j]));
  const float og = sigmoidf_(so + to_f(xr[3 * H + j]));
  // c[t-1]: the same thread wrote cs[t-1][b][j] at the previous step (same item mapping).
  const float c_prev = (t == 0) ? to_f(p.c0[(long long)b * H + j]) : p.cs[(row - B) * H + j];
  const float c_new = fg * c_prev + ig * gg;
  const T h_new = from_f<T>(og * tanhf(c_new));
  const bool active = (p.lengths == nullptr) || (t < p.lengths[b]);
  float* gr = p.gates + row * G;
  gr[j] = ig;
  gr[H + j] = fg;
  gr[2 * H + j] = gg;
  gr[3 * H + j] = og;
  const float c_keep = active ? c_new : c_prev;
  const T h_keep = active ? h_new : h_prev;
  p.cs[row * H + j] = c_keep;
  p.hs[row * H + j] = active ? h_new : from_f<T>(0.0f);
  hdst[(long long)b * H + j] = h_keep;
  if (t == p.Tn - 1) {
    p.hT[(long long)b * H + j] = h_keep;
    p.cT[(long long)b * H + j] = from_f<T>(c_keep);
  }
}

// ---------------------------------------------------------------- backward cell update
// Iteration s (T-1 down to 0; s == -1 writes dh0/dc0).  mv = (dz[s+1] @ W)[b][j] (0 when s==T-1).
template <typename T>
__device__ __forceinline__ void bwd_cell(const BwdParams<T>& p, int s, int b, int j, float mv,
                                         float* dzdst) {
  const int H = p.H, B = p.B;
  const long long G = 4LL * H;
  const long long bj = (long long)b * H + j;
  // Contract: 1 <= lengths[b] <= T.  Clamping to T keeps a too-long row well defined; a row
  // with length <= 0 never ran and passes dhT/dcT straight through to dh0/dc0.
  const int len = (p.lengths == nullptr) ? p.Tn : min(p.lengths[b], p.Tn);
  if (s < 0) {  // after step 0: dh0 = dz[0] @ W, dc0 = dc[0] * f[0]
    if (len >= 1) {
      p.dh0[bj] = from_f<T>(mv);
      p.dc0[bj] = from_f<T>(p.dcbuf[bj]);
    } else {
      p.dh0[bj] = p.dhT[bj];
      p.dc0[bj] = p.dcT[bj];
    }
    return;
  }
  const long long row = (long long)s * B + b;
  T* dgr = p.dgates + row * G;
  float* dzr = dzdst + (long long)b * G;
  if (s >= len) {  // inactive: no gradient; zeros keep the exchange buffer defined
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      dgr[g * H + j] = from_f<T>(0.0f);
      dzr[g * H + j] = 0.0f;
    }
    return;
  }
  // Row b's last active step is len-1; before it (in backward order) dh/dc pass through.
  float dh_in, dc_in;
  if (s == len - 1) {
    dh_in = to_f(p.dhT[bj]);
    dc_in = to_f(p.dcT[bj]);
  } else {
    dh_in = mv;
    dc_in = p.dcbuf[bj];  // written by this same thread at iteration s+1
  }
  const float* gr = p.gates + row * G;
  const float ig = gr[j], fg = gr[H + j], gg = gr[2 * H + j], og = gr[3 * H + j];
  const float ct = p.cs[row * H + j];
  const float cp = (s > 0) ? p.cs[(row - B) * H + j] : to_f(p.c0[bj]);
  const float tc = tanhf(ct);
  const float dh = dh_in + to_f(p.dhs[row * H + j]);
  const float dc = dc_in + dh * og * (1.0f - tc * tc);
  const float dzi = dc * gg * ig * (1.0f - ig);
  const float dzf = dc * cp * fg * (1.0f - fg);
  const float dzg = dc * ig * (1.0f - gg * gg);
  const float dzo = dh * tc * og * (1.0f - og);
  p.dcbuf[bj] = dc * fg;
  dgr[j] = from_f<T>(dzi);
  dgr[H + j] = from_f<T>(dzf);
  dgr[2 * H + j] = from_f<T>(dzg);
  dgr[3 * H + j] = from_f<T>(dzo);
  dzr[j] = dzi;
  dzr[H + j] = dzf;
  dzr[2 * H + j] = dzg;
  dzr[3 * H + j] = dzo;
}

}  // namespace charlstm
