// The LSTM cell's kernels for every path and dtype (kernels.cuh), instantiated in a translation
// unit of their own; the C entry points (launcher.cu) call them.
#include "kernels.cuh"

namespace charlstm {

template int run_forward<CHARLSTM_CELL_LSTM>(const charlstm_fwd_args*, cudaStream_t, int, int*);
template int run_backward<CHARLSTM_CELL_LSTM>(const charlstm_bwd_args*, cudaStream_t, int, int*);

}  // namespace charlstm
