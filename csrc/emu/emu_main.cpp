// Host emulator for the charlstm kernels (see emu_shim.h): runs the real device code of
// csrc/*.cuh for a cell -- the persistent bodies with all blocks concurrently (grid barrier
// included), or the stepwise bodies one step at a time -- on random inputs, and compares every
// output with a double-precision implementation of the contract (emu_reference.h).  The launch
// geometry comes from the launchers' own planning code (csrc/launch_plan.h) fed with emulated
// device limits.
//
// Usage:
//   emu CELL DTYPE T B H PACKED PATH A1 A2 A3
//     CELL lstm|gru|gru0|rnn_tanh|rnn_relu (gru0: the GRU with b_hn = NULL, i.e. zero);
//     DTYPE f32|f16|bf16; PACKED 0|1; PATH persistent|stepwise|persistent_tc (f16/bf16: the
//     WMMA forward and backward).
//     persistent, persistent_tc: A1 emulated SMs, A2 shared memory bytes per block (A3 unused):
//                 plan_persistent_layout decides units per block and staged rows.
//     stepwise:   A1 units and A2 rows per block, A3 shared memory bytes for staging:
//                 plan_stepwise decides the staged rows.
//   emu paths PATH CAPTURING HALF B
//     prints the paths choose_paths tries for a request, in order, or why it refuses.
//   emu plan CELL fma_fwd|fma_bwd|tc_fwd|tc_bwd T B H ELEM SMS SMEM CC
//     prints the persistent plan of CELL for a device with SMS SMs, SMEM bytes of shared memory
//     per block and compute capability CC (e.g. 90), or why the shape does not fit.
//   emu cells
//     prints each cell's name, gate count, saved blocks and 1 if it has a cell state.
// Prints the plan and one line per output; exits 0 when all match, 1 on a mismatch, 2 on bad
// usage or a plan that does not fit, 3 on a broken WMMA rule (emu_shim.h).
// Test-only (tests/test_cuda_emulator.py compiles and runs it); not part of the extension.
#include "emu_shim.h"
#include "emu_reference.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <type_traits>

#include "../fma_backward.cuh"
#include "../fma_forward.cuh"
#include "../cells.cuh"
#include "../launch_plan.h"
#include "../tc_persistent.cuh"

using namespace charlstm;
using emu::compare;
using emu::fromf;
using emu::nan_vec;
using emu::Problem;
using emu::Ref;
using emu::to_double;

namespace {

// ------------------------------------------------------------------ launching
// Runs body(i, smem) for i = 0 .. nsteps-1.  nsteps == 1: one launch with all blocks running
// at once (as a cooperative launch guarantees; the persistent kernels need it).  nsteps > 1:
// a host loop of nsteps launches, each running its blocks one after another (a valid GPU
// schedule too, and the cheapest to emulate).
void launch(dim3 grid, size_t smem_bytes, int nsteps,
            const std::function<void(int, unsigned char*)>& body) {
  const int nblocks = (int)(grid.x * grid.y);
  std::vector<std::unique_ptr<emu::Block>> blocks;
  // Dynamic shared memory per block: 128-byte aligned like the kernels' declaration, filled
  // with 0xFF bytes (NaN in every float type), so a read of anything never written shows.
  struct Free {
    void operator()(unsigned char* q) const { ::operator delete[](q, std::align_val_t(128)); }
  };
  std::vector<std::unique_ptr<unsigned char[], Free>> smem;
  for (int b = 0; b < nblocks; ++b) {
    blocks.emplace_back(new emu::Block(kThreads));
    auto* q = static_cast<unsigned char*>(::operator new[](smem_bytes + 16, std::align_val_t(128)));
    std::memset(q, 0xFF, smem_bytes + 16);
    smem.emplace_back(q);
  }
  auto start_block = [&](int b, int i, std::vector<std::thread>& threads) {
    for (int tid = 0; tid < kThreads; ++tid) {
      threads.emplace_back([&, b, i, tid] {
        threadIdx = make_uint3(tid, 0, 0);
        blockIdx = make_uint3(b % grid.x, b / grid.x, 0);
        blockDim = dim3(kThreads);
        gridDim = grid;
        emu::block = blocks[b].get();
        body(i, smem[b].get());
      });
    }
  };
  if (nsteps == 1) {
    std::vector<std::thread> threads;
    for (int b = 0; b < nblocks; ++b) start_block(b, 0, threads);
    for (auto& t : threads) t.join();
    return;
  }
  for (int i = 0; i < nsteps; ++i) {
    for (int b = 0; b < nblocks; ++b) {
      std::vector<std::thread> threads;
      start_block(b, i, threads);
      for (auto& t : threads) t.join();
    }
  }
}

// One cell in one dtype on one path: both directions, then every output against the reference.
template <class Cell, typename T>
int run(int Tn, int B, int H, bool with_bias, bool packed, bool persistent, bool tc, int a1,
        int a2, int a3, double tol) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  constexpr bool has_c = Cell::kHasC;
  const size_t BH = (size_t)B * H, TBH = (size_t)Tn * BH;
  std::mt19937 rng(1234 + Tn * 7 + B * 13 + H);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](size_t n, float scale) {
    std::vector<T> v(n);
    for (auto& e : v) e = fromf<T>(nd(rng) * scale);
    return v;
  };
  const std::vector<T> x = rnd(TBH * G, 0.5f), w = rnd((size_t)G * H * H, 1.0f / std::sqrt(H));
  const std::vector<T> h0 = rnd(BH, 0.5f), c0 = rnd(BH, 0.5f), b_hn = rnd(H, 0.5f);
  const std::vector<T> dhs = rnd(TBH, 1.0f), dhT = rnd(BH, 1.0f), dcT = rnd(BH, 1.0f);
  std::vector<int> lengths(B, Tn);
  if (packed) {
    std::uniform_int_distribution<int> ud(1, Tn);
    for (int b = 1; b < B; ++b) lengths[b] = ud(rng);
  }
  std::vector<T> wt((size_t)H * G * H);
  for (int r = 0; r < G * H; ++r)
    for (int k = 0; k < H; ++k) wt[(size_t)k * G * H + r] = w[(size_t)r * H + k];

  // Outputs and workspaces, NaN-filled; the cell-state ones exist for the LSTM only.
  std::vector<T> hs = nan_vec<T>(TBH), hT = nan_vec<T>(BH), hbuf = nan_vec<T>(2 * BH);
  std::vector<T> cT = nan_vec<T>(has_c ? BH : 0);
  std::vector<float> cs(has_c ? TBH : 0, NAN), gates(TBH * S, NAN);
  std::vector<T> dgates = nan_vec<T>(TBH * G), dh0 = nan_vec<T>(BH);
  std::vector<T> dc0 = nan_vec<T>(has_c ? BH : 0);
  std::vector<float> dzbuf(2 * BH * G, NAN);
  std::vector<float> dcbuf(Cell::kCarry != Carry::kNone ? BH : 0, NAN);
  unsigned counter = 0;
  auto ptr = [](auto& v) { return v.empty() ? nullptr : v.data(); };  // null when unused

  // The kernel parameters as kernels.cuh fills them.
  FwdParams<T> fp;
  fp.xproj = x.data(), fp.w = w.data(), fp.h0 = h0.data(), fp.c0 = has_c ? c0.data() : nullptr;
  fp.b_hn = with_bias ? b_hn.data() : nullptr;
  fp.lengths = packed ? lengths.data() : nullptr;
  fp.hs = hs.data(), fp.hT = hT.data(), fp.cT = ptr(cT), fp.cs = ptr(cs), fp.gates = gates.data();
  fp.hbuf = hbuf.data(), fp.counter = &counter, fp.Tn = Tn, fp.B = B, fp.H = H;
  BwdParams<T> bp;
  bp.dhs = dhs.data(), bp.dhT = dhT.data(), bp.dcT = has_c ? dcT.data() : nullptr;
  bp.wt = wt.data();
  if constexpr (has_c) {
    bp.c0 = c0.data(), bp.cs = cs.data();
  } else {
    bp.h0 = h0.data(), bp.hs = hs.data();
  }
  bp.gates = gates.data(), bp.lengths = fp.lengths, bp.dgates = dgates.data();
  bp.dh0 = dh0.data(), bp.dc0 = ptr(dc0), bp.dzbuf = dzbuf.data(), bp.dcbuf = ptr(dcbuf);
  bp.counter = &counter, bp.Tn = Tn, bp.B = B, bp.H = H;

  // The two directions' plans and bodies: the same calls as kernels.cuh.
  const size_t rowbytes[2] = {H * sizeof(T), (size_t)G * H * sizeof(float)};  // h / dhid rows
  if (persistent) {
    const DeviceLimits dev{0, 90, a1, a2, true};  // an sm_90 with a1 SMs
    const TcKind kinds[2] = {tc ? kTcForward : kTcNone, tc ? kTcBackward : kTcNone};
    for (int dir = 0; dir < 2; ++dir) {
      PersistentPlan pl;
      plan_persistent_layout(dev, Tn, B, H, G, sizeof(T), rowbytes[dir], kinds[dir], &pl);
      if (!pl.ok) {
        std::printf("persistent plan does not fit: %s\n", pl.why);
        return 2;
      }
      const PersistentGeometry g = pl.geom;
      std::printf("%s %s: %d blocks x %d units, bb %d, smem %zu",
                  tc ? "persistent_tc" : "persistent", dir ? "bwd" : "fwd", pl.blocks, g.units,
                  g.bb, pl.smem);
      if (tc) {
        const TcLayout L = dir ? tc_bwd_layout(H, g.units, G, sizeof(T))
                               : tc_layout(H, g.units, G, sizeof(T));
        std::printf(", mpad %d kpad %d ld %d nsplit %d", L.mpad, L.kpad, L.ld, L.nsplit);
      }
      std::printf("\n");
      counter = 0;
      launch(dim3(pl.blocks), pl.smem, 1, [&](int, unsigned char* sm) {
        if constexpr (!std::is_same_v<T, float>) {  // tensor cores: 16-bit types only
          if (tc && dir == 0) fwd_persistent_tc_body<Cell, T>(fp, g, sm);
          if (tc && dir == 1) bwd_persistent_tc_body<Cell, T>(bp, g, sm);
        }
        if (!tc && dir == 0) fwd_persistent_body<Cell, T>(fp, g, sm);
        if (!tc && dir == 1) bwd_persistent_body<Cell, T>(bp, g, sm);
      });
    }
  } else {
    StepLimits lim;
    lim.units = a1;
    lim.rows = a2;
    lim.smem = (size_t)a3;
    for (int dir = 0; dir < 2; ++dir) {
      StepPlan sp;
      plan_stepwise(B, H, rowbytes[dir], lim, &sp);
      if (!sp.ok) {
        std::printf("stepwise plan: %s\n", sp.why);
        return 2;
      }
      std::printf("stepwise %s: grid %u x %u, units %d rows %d stage_rows %d\n",
                  dir ? "bwd" : "fwd", sp.grid_x, sp.grid_y, sp.units, sp.rows, sp.stage_rows);
      if (dir == 0)
        launch(dim3(sp.grid_x, sp.grid_y), sp.smem, Tn, [&](int t, unsigned char* sm) {
          fwd_step_body<Cell, T>(fp, t, sp.units, sp.rows, sp.stage_rows, sm);
        });
      else
        launch(dim3(sp.grid_x, sp.grid_y), sp.smem, Tn + 1, [&](int i, unsigned char* sm) {
          bwd_step_body<Cell, T>(bp, Tn - 1 - i, sp.units, sp.rows, sp.stage_rows, sm);
        });
    }
  }

  // The reference: forward from the inputs, backward from the kernels' saved tensors.
  Problem P{Cell::kCode, Tn, B, H, to_double(x), to_double(w),
            with_bias ? to_double(b_hn) : std::vector<double>(), to_double(h0),
            has_c ? to_double(c0) : std::vector<double>(), to_double(dhs), to_double(dhT),
            has_c ? to_double(dcT) : std::vector<double>(), packed ? &lengths : nullptr};
  Ref r;
  emu::forward(P, [](double v) { return (double)emu::tof(fromf<T>((float)v)); }, &r);
  emu::backward(P, to_double(hs), to_double(cs), to_double(gates), &r);
  std::vector<char> inactive_h(TBH, 0), inactive_g(TBH * G, 0);
  for (int t = 0; t < Tn; ++t)
    for (int b = 0; b < B; ++b)
      if (t >= lengths[b]) {
        std::fill_n(&inactive_h[((size_t)t * B + b) * H], H, 1);
        std::fill_n(&inactive_g[((size_t)t * B + b) * G * H], G * H, 1);
      }
  bool ok = compare("hs", hs, r.hs, tol, &inactive_h);
  ok &= compare("hT", hT, r.hT, tol);
  if (has_c) ok &= compare("cT", cT, r.cT, tol) & compare("cs", cs, r.cs, tol);
  ok &= compare("gates", gates, r.gates, tol);
  ok &= compare("dgates", dgates, r.dgates, tol * 4, &inactive_g);
  ok &= compare("dh0", dh0, r.dh0, tol * 4);
  if (has_c) ok &= compare("dc0", dc0, r.dc0, tol * 4);
  return ok ? 0 : 1;
}

// The enum charlstm_cell code named `name` (gru0: the GRU without b_hn), or -1.
int cell_code(const std::string& name) {
  for (int c = CHARLSTM_CELL_LSTM; c <= CHARLSTM_CELL_RNN_RELU; ++c)
    if (name == cell_name(c)) return c;
  return name == "gru0" ? CHARLSTM_CELL_GRU : -1;
}

// `emu plan CELL KIND T B H ELEM SMS SMEM CC`: the launchers' persistent plan (KIND fma_fwd,
// fma_bwd, tc_fwd or tc_bwd; ELEM bytes per element; CC compute capability as 80, 90, ...).
int print_plan(int argc, char** argv) {
  if (argc != 11) return 2;
  const int cell = cell_code(argv[2]);
  const std::string kind = argv[3];
  const int Tn = std::atoi(argv[4]), B = std::atoi(argv[5]), H = std::atoi(argv[6]);
  const size_t elem = (size_t)std::atoi(argv[7]);
  const DeviceLimits dev{0, std::atoi(argv[10]), std::atoi(argv[8]), std::atoi(argv[9]), true};
  if (cell < 0) return 2;
  const int G = cell_gates(cell);
  TcKind tc = kTcNone;
  size_t rowbytes = 0;  // as kernels.cuh computes them
  if (kind == "fma_fwd")
    rowbytes = H * elem;
  else if (kind == "fma_bwd")
    rowbytes = (size_t)G * H * sizeof(float);
  else if (kind == "tc_fwd")
    tc = kTcForward;
  else if (kind == "tc_bwd")
    tc = kTcBackward;
  else
    return 2;
  PersistentPlan pl;
  plan_persistent_layout(dev, Tn, B, H, G, elem, rowbytes, tc, &pl);
  if (!pl.ok) {
    std::printf("unfit: %s\n", pl.why);
    return 0;
  }
  std::printf("ok: %d blocks x %d units, bb %d, smem %zu\n", pl.blocks, pl.geom.units, pl.geom.bb,
              pl.smem);
  return 0;
}

// `emu cells`: each cell's name, gate count, saved blocks and whether it has c, from the
// device cells (cells.cuh), which assert that they agree with launch_plan.h's table.
template <class Cell>
void print_cell() {
  std::printf("%s %d %d %d\n", cell_name(Cell::kCode), Cell::kGates, Cell::kSaved,
              Cell::kHasC ? 1 : 0);
}
int print_cells() {
  print_cell<LstmCell>();
  print_cell<GruCell>();
  print_cell<RnnTanhCell>();
  print_cell<RnnReluCell>();
  return 0;
}

// `emu paths PATH CAPTURING HALF B`: the launchers' choice of paths for a request.
int print_paths(int argc, char** argv) {
  if (argc != 6) return 2;
  const std::string name = argv[2];
  int requested = -1;
  for (int p = CHARLSTM_PATH_AUTO; p <= CHARLSTM_PATH_PERSISTENT_TC; ++p)
    if (name == path_name(p)) requested = p;
  if (requested < 0) return 2;
  const PathChoice c =
      choose_paths(requested, std::atoi(argv[3]) != 0, std::atoi(argv[4]) != 0, std::atoi(argv[5]));
  if (!c.ok) {
    std::printf("refused: %s\n", c.why);
    return 0;
  }
  std::printf("paths:");
  for (int i = 0; i < c.n; ++i) std::printf(" %s", path_name(c.paths[i]));
  std::printf("\n");
  return 0;
}

}  // namespace

// Runs cell `kCell` in the dtype and path the arguments name.
template <int kCell>
int run_cell(const std::string& dt, int Tn, int B, int H, bool with_bias, bool packed,
             const std::string& path, int a1, int a2, int a3) {
  using Cell = typename CellOf<kCell>::type;
  const bool tc = path == "persistent_tc";
  const bool pers = path != "stepwise";
  if (dt == "f32" && !tc)
    return run<Cell, float>(Tn, B, H, with_bias, packed, pers, false, a1, a2, a3, 2e-5);
  if (dt == "f16")
    return run<Cell, __half>(Tn, B, H, with_bias, packed, pers, tc, a1, a2, a3, 4e-3);
  if (dt == "bf16")
    return run<Cell, __nv_bfloat16>(Tn, B, H, with_bias, packed, pers, tc, a1, a2, a3, 3e-2);
  return 2;
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "paths") return print_paths(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "plan") return print_plan(argc, argv);
  if (argc == 2 && std::string(argv[1]) == "cells") return print_cells();
  if (argc != 11) {
    std::fprintf(stderr,
                 "usage: %s lstm|gru|gru0|rnn_tanh|rnn_relu f32|f16|bf16 T B H PACKED "
                 "persistent|stepwise|persistent_tc (SMS SMEM 0 | UNITS ROWS SMEM)\n"
                 "       %s paths auto|persistent|stepwise|persistent_tc CAPTURING HALF B\n"
                 "       %s plan CELL fma_fwd|fma_bwd|tc_fwd|tc_bwd T B H ELEM SMS SMEM CC\n"
                 "       %s cells\n",
                 argv[0], argv[0], argv[0], argv[0]);
    return 2;
  }
  const std::string cell = argv[1], dt = argv[2], path = argv[7];
  const int Tn = std::atoi(argv[3]), B = std::atoi(argv[4]), H = std::atoi(argv[5]);
  const bool packed = std::atoi(argv[6]) != 0;
  const int a1 = std::atoi(argv[8]), a2 = std::atoi(argv[9]), a3 = std::atoi(argv[10]);
  if (path != "persistent" && path != "stepwise" && path != "persistent_tc") return 2;
  const bool bias = cell != "gru0";
  switch (cell_code(cell)) {
    case CHARLSTM_CELL_LSTM:
      return run_cell<CHARLSTM_CELL_LSTM>(dt, Tn, B, H, false, packed, path, a1, a2, a3);
    case CHARLSTM_CELL_GRU:
      return run_cell<CHARLSTM_CELL_GRU>(dt, Tn, B, H, bias, packed, path, a1, a2, a3);
    case CHARLSTM_CELL_RNN_TANH:
      return run_cell<CHARLSTM_CELL_RNN_TANH>(dt, Tn, B, H, false, packed, path, a1, a2, a3);
    case CHARLSTM_CELL_RNN_RELU:
      return run_cell<CHARLSTM_CELL_RNN_RELU>(dt, Tn, B, H, false, packed, path, a1, a2, a3);
    default: return 2;
  }
}
