// Host emulator for the charlstm kernels (see emu_shim.h): runs the real device code of
// csrc/*.cuh -- the persistent bodies with all blocks concurrently (grid barrier included), or
// the stepwise bodies one step at a time -- on random inputs, and compares every output with a
// double-precision implementation of the contract (emu_reference.h).  The launch
// geometry comes from the launchers' own planning code (csrc/launch_plan.h) fed with emulated
// device limits.
//
// Usage:
//   emu DTYPE T B H PACKED PATH A1 A2 A3
//     DTYPE f32|f16|bf16; PACKED 0|1; PATH persistent|stepwise|persistent_tc (f16/bf16: the
//     WMMA forward and backward).
//     persistent, persistent_tc: A1 emulated SMs, A2 shared memory bytes per block (A3 unused):
//                 plan_persistent_layout decides units per block and staged rows.
//     stepwise:   A1 units and A2 rows per block, A3 shared memory bytes for staging:
//                 plan_stepwise decides the staged rows.
//   emu paths PATH CAPTURING HALF B
//     prints the paths choose_paths tries for a request, in order, or why it refuses.
//   emu plan fma_fwd|fma_bwd|tc_fwd|tc_bwd T B H ELEM SMS SMEM CC
//     prints the persistent plan for a device with SMS SMs, SMEM bytes of shared memory per
//     block and compute capability CC (e.g. 90), or why the shape does not fit.
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
#include "../launch_plan.h"
#include "../tc_persistent.cuh"

using namespace charlstm;
using emu::compare;
using emu::fromf;
using emu::nan_vec;
using emu::Ref;
using emu::reference;

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

template <typename T>
int run(int Tn, int B, int H, bool packed, bool persistent, bool tc, int a1, int a2, int a3,
        double tol) {
  const int G = 4 * H;
  std::mt19937 rng(1234 + Tn * 7 + B * 13 + H);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](size_t n, float scale) {
    std::vector<T> v(n);
    for (auto& e : v) e = fromf<T>(nd(rng) * scale);
    return v;
  };
  std::vector<T> x = rnd((size_t)Tn * B * G, 0.5f),
                 w = rnd((size_t)G * H, 1.0f / std::sqrt((float)H));
  std::vector<T> h0 = rnd((size_t)B * H, 0.5f), c0 = rnd((size_t)B * H, 0.5f);
  std::vector<T> dhs = rnd((size_t)Tn * B * H, 1.0f), dhT = rnd((size_t)B * H, 1.0f),
                 dcT = rnd((size_t)B * H, 1.0f);
  std::vector<int> lengths(B, Tn);
  if (packed) {
    std::uniform_int_distribution<int> ud(1, Tn);
    for (int b = 1; b < B; ++b) lengths[b] = ud(rng);
  }
  std::vector<T> wt((size_t)H * G);
  for (int r = 0; r < G; ++r)
    for (int k = 0; k < H; ++k) wt[(size_t)k * G + r] = w[(size_t)r * H + k];

  std::vector<T> hs = nan_vec<T>((size_t)Tn * B * H), hT = nan_vec<T>((size_t)B * H),
                 cT = nan_vec<T>((size_t)B * H), hbuf = nan_vec<T>((size_t)2 * B * H);
  std::vector<float> cs((size_t)Tn * B * H, NAN), gates((size_t)Tn * B * G, NAN);
  std::vector<T> dgates = nan_vec<T>((size_t)Tn * B * G), dh0 = nan_vec<T>((size_t)B * H),
                 dc0 = nan_vec<T>((size_t)B * H);
  std::vector<float> dzbuf((size_t)2 * B * G, NAN), dcbuf((size_t)B * H, NAN);
  unsigned counter = 0;

  FwdParams<T> fp{x.data(),    w.data(),  h0.data(), c0.data(), packed ? lengths.data() : nullptr,
                  hs.data(),   hT.data(), cT.data(), cs.data(), gates.data(),
                  hbuf.data(), &counter,  Tn,        B,         H};
  BwdParams<T> bp{dhs.data(),
                  dhT.data(),
                  dcT.data(),
                  wt.data(),
                  c0.data(),
                  cs.data(),
                  gates.data(),
                  packed ? lengths.data() : nullptr,
                  dgates.data(),
                  dh0.data(),
                  dc0.data(),
                  dzbuf.data(),
                  dcbuf.data(),
                  &counter,
                  Tn,
                  B,
                  H};

  // The two directions' plans and bodies: the same calls as lstm_forward.cu/lstm_backward.cu.
  const size_t rowbytes[2] = {H * sizeof(T), G * sizeof(float)};  // a staged h / dz row
  if (persistent) {
    const DeviceLimits dev{0, 90, a1, a2, true};  // an sm_90 with a1 SMs
    const TcKind kinds[2] = {tc ? kTcForward : kTcNone, tc ? kTcBackward : kTcNone};
    for (int dir = 0; dir < 2; ++dir) {
      PersistentPlan pl;
      plan_persistent_layout(dev, Tn, B, H, sizeof(T), rowbytes[dir], kinds[dir], &pl);
      if (!pl.ok) {
        std::printf("persistent plan does not fit: %s\n", pl.why);
        return 2;
      }
      const PersistentGeometry g = pl.geom;
      std::printf("%s %s: %d blocks x %d units, bb %d, smem %zu",
                  tc ? "persistent_tc" : "persistent", dir ? "bwd" : "fwd", pl.blocks, g.units,
                  g.bb, pl.smem);
      if (tc) {
        const TcLayout L =
            dir ? tc_bwd_layout(H, g.units, sizeof(T)) : tc_layout(H, g.units, sizeof(T));
        std::printf(", mpad %d kpad %d ld %d nsplit %d", L.mpad, L.kpad, L.ld, L.nsplit);
      }
      std::printf("\n");
      counter = 0;
      launch(dim3(pl.blocks), pl.smem, 1, [&](int, unsigned char* sm) {
        if constexpr (!std::is_same_v<T, float>) {  // tensor cores: 16-bit types only
          if (tc && dir == 0) fwd_persistent_tc_body<T>(fp, g, sm);
          if (tc && dir == 1) bwd_persistent_tc_body<T>(bp, g, sm);
        }
        if (!tc && dir == 0) fwd_persistent_body<T>(fp, g, sm);
        if (!tc && dir == 1) bwd_persistent_body<T>(bp, g, sm);
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
          fwd_step_body<T>(fp, t, sp.units, sp.rows, sp.stage_rows, sm);
        });
      else
        launch(dim3(sp.grid_x, sp.grid_y), sp.smem, Tn + 1, [&](int i, unsigned char* sm) {
          bwd_step_body<T>(bp, Tn - 1 - i, sp.units, sp.rows, sp.stage_rows, sm);
        });
    }
  }

  Ref r = reference<T>(Tn, B, H, x, w, h0, c0, packed ? &lengths : nullptr, dhs, dhT, dcT);
  std::vector<char> inactive_h((size_t)Tn * B * H, 0), inactive_g((size_t)Tn * B * G, 0);
  for (int t = 0; t < Tn; ++t)
    for (int b = 0; b < B; ++b)
      if (t >= lengths[b]) {
        std::fill_n(&inactive_h[((size_t)t * B + b) * H], H, 1);
        std::fill_n(&inactive_g[((size_t)t * B + b) * G], G, 1);
      }
  bool ok = compare("hs", hs, r.hs, tol, &inactive_h);
  ok &= compare("hT", hT, r.hT, tol);
  ok &= compare("cT", cT, r.cT, tol);
  ok &= compare("cs", cs, r.cs, tol);
  ok &= compare("gates", gates, r.gates, tol);
  ok &= compare("dgates", dgates, r.dgates, tol * 4, &inactive_g);
  ok &= compare("dh0", dh0, r.dh0, tol * 4);
  ok &= compare("dc0", dc0, r.dc0, tol * 4);
  return ok ? 0 : 1;
}

// `emu plan KIND T B H ELEM SMS SMEM CC`: the launchers' persistent plan (KIND fma_fwd,
// fma_bwd, tc_fwd or tc_bwd; ELEM bytes per element; CC compute capability as 80, 90, ...).
int print_plan(int argc, char** argv) {
  if (argc != 10) return 2;
  const std::string kind = argv[2];
  const int Tn = std::atoi(argv[3]), B = std::atoi(argv[4]), H = std::atoi(argv[5]);
  const size_t elem = (size_t)std::atoi(argv[6]);
  const DeviceLimits dev{0, std::atoi(argv[9]), std::atoi(argv[7]), std::atoi(argv[8]), true};
  TcKind tc = kTcNone;
  size_t rowbytes = 0;
  if (kind == "fma_fwd")
    rowbytes = H * elem;
  else if (kind == "fma_bwd")
    rowbytes = 4 * (size_t)H * sizeof(float);
  else if (kind == "tc_fwd")
    tc = kTcForward;
  else if (kind == "tc_bwd")
    tc = kTcBackward;
  else
    return 2;
  PersistentPlan pl;
  plan_persistent_layout(dev, Tn, B, H, elem, rowbytes, tc, &pl);
  if (!pl.ok) {
    std::printf("unfit: %s\n", pl.why);
    return 0;
  }
  std::printf("ok: %d blocks x %d units, bb %d, smem %zu\n", pl.blocks, pl.geom.units, pl.geom.bb,
              pl.smem);
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

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "paths") return print_paths(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "plan") return print_plan(argc, argv);
  if (argc != 10) {
    std::fprintf(stderr,
                 "usage: %s f32|f16|bf16 T B H PACKED persistent|stepwise|persistent_tc "
                 "(SMS SMEM 0 | UNITS ROWS SMEM)\n"
                 "       %s paths auto|persistent|stepwise|persistent_tc CAPTURING HALF B\n"
                 "       %s plan fma_fwd|fma_bwd|tc_fwd|tc_bwd T B H ELEM SMS SMEM CC\n",
                 argv[0], argv[0], argv[0]);
    return 2;
  }
  const std::string dt = argv[1], path = argv[6];
  const int Tn = std::atoi(argv[2]), B = std::atoi(argv[3]), H = std::atoi(argv[4]);
  const bool packed = std::atoi(argv[5]) != 0;
  const int a1 = std::atoi(argv[7]), a2 = std::atoi(argv[8]), a3 = std::atoi(argv[9]);
  if (path != "persistent" && path != "stepwise" && path != "persistent_tc") return 2;
  const bool tc = path == "persistent_tc";
  const bool pers = path != "stepwise";
  if (dt == "f32" && !tc) return run<float>(Tn, B, H, packed, pers, false, a1, a2, a3, 2e-5);
  if (dt == "f16") return run<__half>(Tn, B, H, packed, pers, tc, a1, a2, a3, 4e-3);
  if (dt == "bf16") return run<__nv_bfloat16>(Tn, B, H, packed, pers, tc, a1, a2, a3, 3e-2);
  return 2;
}
