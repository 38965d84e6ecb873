// The __global__ kernels of the recurrent core, one per direction, path, cell and dtype (each
// declares its dynamic shared memory and calls a body of fma_forward.cuh, fma_backward.cuh or
// tc_persistent.cuh), and run_forward<kCell> / run_backward<kCell> (launcher.cuh), which fill
// the kernel parameters for a cell and run them through run_direction.  Included once per cell
// group by cell_<name>.cu, which instantiates them: the cells compile as separate translation
// units (in parallel, and with ptxas reports per cell).
#pragma once

#include <type_traits>

#include "cells.cuh"
#include "fma_backward.cuh"
#include "fma_forward.cuh"
#include "launch.h"
#include "launcher.cuh"
#include "tc_persistent.cuh"

namespace charlstm {

// ---------------------------------------------------------------- kernels
template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_persistent_kernel(FwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(16) unsigned char smem[];
  fwd_persistent_body<Cell, T>(p, PersistentGeometry{units, bb, stage_offset}, smem);
}

template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_step_kernel(FwdParams<T> p, int t, int units, int rows, int stage_rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  fwd_step_body<Cell, T>(p, t, units, rows, stage_rows, smem);
}

template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_persistent_tc_kernel(FwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(128) unsigned char smem_tc[];
  fwd_persistent_tc_body<Cell, T>(p, PersistentGeometry{units, bb, stage_offset}, smem_tc);
}

template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_persistent_kernel(BwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(16) unsigned char smem[];
  bwd_persistent_body<Cell, T>(p, PersistentGeometry{units, bb, stage_offset}, smem);
}

template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_step_kernel(BwdParams<T> p, int s, int units, int rows, int stage_rows) {
  extern __shared__ __align__(16) unsigned char smem[];
  bwd_step_body<Cell, T>(p, s, units, rows, stage_rows, smem);
}

template <class Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_persistent_tc_kernel(BwdParams<T> p, int units, int bb, unsigned stage_offset) {
  extern __shared__ __align__(128) unsigned char smem_tc[];
  bwd_persistent_tc_body<Cell, T>(p, PersistentGeometry{units, bb, stage_offset}, smem_tc);
}

// ---------------------------------------------------------------- one direction, one dtype
template <class Cell, typename T>
static int forward_typed(const charlstm_fwd_args* a, cudaStream_t stream, int path, int* used) {
  FwdParams<T> p;
  p.xproj = static_cast<const T*>(a->xproj);
  p.w = static_cast<const T*>(a->w_hh);
  p.h0 = static_cast<const T*>(a->h0);
  p.c0 = static_cast<const T*>(a->c0);
  p.b_hn = static_cast<const T*>(a->b_hn);
  p.lengths = a->lengths;
  p.hs = static_cast<T*>(a->hs);
  p.hT = static_cast<T*>(a->hT);
  p.cT = static_cast<T*>(a->cT);
  p.cs = a->cs;
  p.gates = a->gates;
  p.hbuf = static_cast<T*>(a->hbuf);
  p.counter = a->counter;
  p.Tn = a->T;
  p.B = a->B;
  p.H = a->H;
  DirectionKernels k;
  k.persistent = reinterpret_cast<const void*>(&fwd_persistent_kernel<Cell, T>);
  k.tc = nullptr;  // tensor cores: float16/bfloat16 only (never instantiated for float)
  if constexpr (!std::is_same<T, float>::value)
    k.tc = reinterpret_cast<const void*>(&fwd_persistent_tc_kernel<Cell, T>);
  k.tc_kind = kTcForward;
  const size_t rowbytes = (size_t)a->H * sizeof(T);  // one staged row of h
  return run_direction(
      "forward", k, &p, p.counter, a->T, a->B, a->H, Cell::kGates, sizeof(T), rowbytes, path,
      stream,
      [&](const StepPlan& sp) {
        for (int t = 0; t < a->T; ++t) {
          fwd_step_kernel<Cell, T><<<dim3(sp.grid_x, sp.grid_y), kThreads, sp.smem, stream>>>(
              p, t, sp.units, sp.rows, sp.stage_rows);
          const cudaError_t e = cudaGetLastError();
          if (e != cudaSuccess) return e;
        }
        return cudaSuccess;
      },
      used);
}

template <class Cell, typename T>
static int backward_typed(const charlstm_bwd_args* a, cudaStream_t stream, int path, int* used) {
  BwdParams<T> p;
  p.dhs = static_cast<const T*>(a->dhs);
  p.dhT = static_cast<const T*>(a->dhT);
  p.dcT = static_cast<const T*>(a->dcT);
  p.wt = static_cast<const T*>(a->w_t);
  if constexpr (Cell::kHasC) {  // they share storage (cells.cuh)
    p.c0 = static_cast<const T*>(a->c0);
    p.cs = a->cs;
  } else {
    p.h0 = static_cast<const T*>(a->h0);
    p.hs = static_cast<const T*>(a->hs);
  }
  p.gates = a->gates;
  p.lengths = a->lengths;
  p.dgates = static_cast<T*>(a->dgates);
  p.dh0 = static_cast<T*>(a->dh0);
  p.dc0 = static_cast<T*>(a->dc0);
  p.dzbuf = a->dzbuf;
  p.dcbuf = a->dcbuf;
  p.counter = a->counter;
  p.Tn = a->T;
  p.B = a->B;
  p.H = a->H;
  DirectionKernels k;
  k.persistent = reinterpret_cast<const void*>(&bwd_persistent_kernel<Cell, T>);
  k.tc = nullptr;  // tensor cores: float16/bfloat16 only (never instantiated for float)
  if constexpr (!std::is_same<T, float>::value)
    k.tc = reinterpret_cast<const void*>(&bwd_persistent_tc_kernel<Cell, T>);
  k.tc_kind = kTcBackward;
  const size_t rowbytes = (size_t)Cell::kGates * a->H * sizeof(float);  // a staged dhid row
  return run_direction(
      "backward", k, &p, p.counter, a->T, a->B, a->H, Cell::kGates, sizeof(T), rowbytes, path,
      stream,
      [&](const StepPlan& sp) {
        for (int s = a->T - 1; s >= -1; --s) {
          bwd_step_kernel<Cell, T><<<dim3(sp.grid_x, sp.grid_y), kThreads, sp.smem, stream>>>(
              p, s, sp.units, sp.rows, sp.stage_rows);
          const cudaError_t e = cudaGetLastError();
          if (e != cudaSuccess) return e;
        }
        return cudaSuccess;
      },
      used);
}

// ---------------------------------------------------------------- one cell, every dtype
// f(T()) for the element type of a checked dtype code.
template <class F>
int by_dtype(int dtype, F&& f) {
  switch (dtype) {
    case CHARLSTM_FLOAT32: return f(float());
    case CHARLSTM_FLOAT16: return f(__half());
    default: return f(__nv_bfloat16());
  }
}

// The C entry points (launcher.cu) have checked the arguments and call these.
template <int kCell>
int run_forward(const charlstm_fwd_args* a, cudaStream_t stream, int path, int* used) {
  return by_dtype(a->dtype, [&](auto t) {
    return forward_typed<typename CellOf<kCell>::type, decltype(t)>(a, stream, path, used);
  });
}

template <int kCell>
int run_backward(const charlstm_bwd_args* a, cudaStream_t stream, int path, int* used) {
  return by_dtype(a->dtype, [&](auto t) {
    return backward_typed<typename CellOf<kCell>::type, decltype(t)>(a, stream, path, used);
  });
}

}  // namespace charlstm
