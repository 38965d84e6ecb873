/* charlstm CUDA launchers: the C interface between the kernels (the csrc .cu files, CUDA toolkit
 * only) and the pybind11 bindings (csrc/bindings.cpp, torch headers only).
 *
 * This header needs neither CUDA nor torch headers: streams travel as opaque pointers
 * (a cudaStream_t is a pointer; 0 is the legacy default stream).
 *
 * The contract is the recurrent core of charlstm/backends/contract.py, one layer and one
 * direction for the whole sequence, for every cell (enum charlstm_cell).  All tensors are dense,
 * row-major (contiguous) and on the current CUDA device; D is the dtype named by `dtype`
 * (float32, float16 or bfloat16; float64 is not supported by this backend).  G is the cell's
 * gate count and S the number of H-blocks it saves for the backward (launch_plan.h:
 * cell_gates, cell_saved).
 */
#ifndef CHARLSTM_LAUNCH_H
#define CHARLSTM_LAUNCH_H

#ifdef __cplusplus
extern "C" {
#endif

/* The element type D of xproj, w_hh, h0, c0, hs, hT, cT, dgates, dh0, dc0. */
enum charlstm_dtype { CHARLSTM_FLOAT32 = 0, CHARLSTM_FLOAT16 = 1, CHARLSTM_BFLOAT16 = 2 };

/* The recurrent cell (the contract's Cell; charlstm/backends/abi.py mirrors the codes).
 *   LSTM:     G = 4 (i, f, g, o), S = 4 (activated i, f, g, o), cell state c.
 *   GRU:      G = 3 (r, z, n), S = 4 (r, z, n, hn = h[t-1] W_hn^T + b_hn), hidden-side bias b_hn.
 *   RNN_TANH, RNN_RELU: G = 1, S = 1 (the activated h[t] before rounding to D). */
enum charlstm_cell {
  CHARLSTM_CELL_LSTM = 0,
  CHARLSTM_CELL_GRU = 1,
  CHARLSTM_CELL_RNN_TANH = 2,
  CHARLSTM_CELL_RNN_RELU = 3
};

/* Which implementation runs the recurrence.
 * PERSISTENT:    one cooperative launch for the whole sequence, W_hh slices in shared memory,
 *                one grid-wide flag barrier per step; float32 FMA matmul.
 * STEPWISE:      one fused (matmul + cell) launch per step from a host loop; W_hh read from L2.
 * PERSISTENT_TC: PERSISTENT with the matmul of both directions on tensor cores (WMMA) for
 *                float16 and bfloat16; float32 runs PERSISTENT.
 * AUTO:          (each direction) PERSISTENT_TC for float16/bfloat16 with B >=
 *                CHARLSTM_TC_MIN_BATCH when its layout fits, else PERSISTENT when its grid fits
 *                on the device at once, else STEPWISE.
 * While the stream is capturing a CUDA graph, AUTO runs STEPWISE and a forced PERSISTENT or
 * PERSISTENT_TC is refused (CHARLSTM_ERR_PERSISTENT_UNFIT): the persistent paths need a
 * cooperative launch, whose capture the runtime may refuse (launch_plan.h: choose_paths). */
/* Batch from which AUTO runs the tensor-core paths: an estimate from arithmetic, NOT measured
 * (at B = 16, H = 768 the FMA matmul costs ~1.3 us per step per block, about one barrier; the
 * WMMA one ~0.1 us; below ~8 rows the 16-row WMMA tile is mostly padding). */
#define CHARLSTM_TC_MIN_BATCH 8
enum charlstm_path {
  CHARLSTM_PATH_AUTO = 0,
  CHARLSTM_PATH_PERSISTENT = 1,
  CHARLSTM_PATH_STEPWISE = 2,
  CHARLSTM_PATH_PERSISTENT_TC = 3
};

/* Return codes of the launchers; charlstm_last_error() has the sentence. */
enum charlstm_status {
  CHARLSTM_OK = 0,
  CHARLSTM_ERR_ARGS = 1,             /* bad sizes, dtype, cell or pointers */
  CHARLSTM_ERR_PERSISTENT_UNFIT = 2, /* a forced persistent path cannot run: the shape does not
                                        fit, or the stream is capturing a CUDA graph */
  CHARLSTM_ERR_CUDA = 3              /* a CUDA runtime call failed */
};

/* Forward.  Inputs: xproj [T,B,G*H] D; w_hh [G*H,H] D; h0 [B,H] D; c0 [B,H] D (LSTM, else
 * ignored); b_hn [H] D or NULL for 0 (GRU, else ignored); lengths [B] int32 or NULL (row b is
 * active at step t iff t < lengths[b], 1 <= lengths[b] <= T).
 * Outputs (written completely): hs [T,B,H] D (0 on inactive rows); hT [B,H] D;
 * gates [T,B,S*H] float32 (see enum charlstm_cell); LSTM only: cT [B,H] D, cs [T,B,H] float32
 * (ignored, may be NULL, for the other cells).
 * Workspace: hbuf [2,B,H] D and counter (one unsigned int); contents on entry do not matter. */
typedef struct charlstm_fwd_args {
  int T, B, H;
  int dtype; /* enum charlstm_dtype */
  int cell;  /* enum charlstm_cell */
  const void* xproj;
  const void* w_hh;
  const void* h0;
  const void* c0;
  const void* b_hn;
  const int* lengths;
  void* hs;
  void* hT;
  void* cT;
  float* cs;
  float* gates;
  void* hbuf;
  unsigned int* counter;
} charlstm_fwd_args;

/* Backward.  Inputs: dhs [T,B,H] D; dhT [B,H] D; w_t = w_hh transposed, [H,G*H] D;
 * gates [T,B,S*H] float32 from the forward; lengths as above; LSTM: dcT, c0 [B,H] D and cs
 * [T,B,H] float32; GRU: h0 [B,H] D and hs [T,B,H] D (h[t-1] enters its backward).  Fields a
 * cell does not read are ignored (may be NULL).
 * Outputs: dgates [T,B,G*H] D (d xproj; 0 on inactive rows); dh0 [B,H] D; dc0 [B,H] D (LSTM).
 * Workspace: dzbuf [2,B,G*H] float32 (the gradient of h[t-1] W_hh^T exchanged between steps:
 * dgates, except the GRU's n block, scaled by r), counter (one unsigned int), and for the LSTM
 * and the GRU dcbuf [B,H] float32 (what a (row, unit) carries to the previous step besides the
 * matmul: the LSTM's dc, the GRU's dh * z). */
typedef struct charlstm_bwd_args {
  int T, B, H;
  int dtype;
  int cell;
  const void* dhs;
  const void* dhT;
  const void* dcT;
  const void* w_t;
  const void* h0;
  const void* c0;
  const void* hs;
  const float* cs;
  const float* gates;
  const int* lengths;
  void* dgates;
  void* dh0;
  void* dc0;
  float* dzbuf;
  float* dcbuf;
  unsigned int* counter;
} charlstm_bwd_args;

/* Enqueue the forward / backward on `stream`.  `path` is an enum charlstm_path; on success
 * *path_used (if not NULL) receives the path that ran (PERSISTENT_TC, PERSISTENT or
 * STEPWISE, never AUTO).  Returns an enum charlstm_status; asynchronous kernel faults surface
 * at the next synchronisation. */
int charlstm_forward(const charlstm_fwd_args* args, void* stream, int path, int* path_used);
int charlstm_backward(const charlstm_bwd_args* args, void* stream, int path, int* path_used);

/* The message of the last failed launcher call on this host thread ("" if none). */
const char* charlstm_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* CHARLSTM_LAUNCH_H */
