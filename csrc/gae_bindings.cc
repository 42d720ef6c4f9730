// Bindings of the advantage kernels: pointers, strides and a stream cross as integers, so that
// numpy arrays and torch tensors (CPU or CUDA) share one path and nothing links libtorch. The
// Python wrapper (metarobot/returns.py) checks shapes, dtypes and devices.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "gae.h"

namespace py = pybind11;

namespace metarobot {
namespace {

// An address given as an int (torch's data_ptr()), a numpy array (its data), or None (0).
uintptr_t Address(const py::handle& obj) {
  if (obj.is_none()) return 0;
  if (py::isinstance<py::array>(obj)) {
    return reinterpret_cast<uintptr_t>(py::reinterpret_borrow<py::array>(obj).data());
  }
  return obj.cast<uintptr_t>();
}

template <typename T>
void Run(const std::string& device, int64_t steps, int64_t batch,
         const std::vector<uintptr_t>& ptrs, const std::vector<int64_t>& strides, double gamma,
         double lam, uintptr_t out, uintptr_t stream, int nthread) {
  GaeInputs<T> in;
  in.steps = steps;
  in.batch = batch;
  in.reward = reinterpret_cast<const T*>(ptrs[0]);
  in.value = reinterpret_cast<const T*>(ptrs[1]);
  in.next_value = reinterpret_cast<const T*>(ptrs[2]);
  in.done = reinterpret_cast<const uint8_t*>(ptrs[3]);
  in.terminated = reinterpret_cast<const uint8_t*>(ptrs[4]);
  for (int k = 0; k < 5; ++k) {
    in.stride[k][0] = strides[2 * k];
    in.stride[k][1] = strides[2 * k + 1];
  }
  in.gamma = static_cast<T>(gamma);
  in.lam = static_cast<T>(lam);
  T* o = reinterpret_cast<T*>(out);
  if (device == "cpu") {
    py::gil_scoped_release release;
    GaeCpu(in, o, nthread);
  } else {
    const char* err;
    {
      py::gil_scoped_release release;
      err = GaeCuda(in, o, reinterpret_cast<void*>(stream));
    }
    if (err[0]) throw std::runtime_error(std::string("CUDA advantage kernel failed: ") + err);
  }
}

}  // namespace

void BindGae(py::module_& m) {
  m.def("cuda_compiled", &CudaCompiled, "whether the CUDA kernels were compiled");
  m.def("cuda_device_count", &CudaDeviceCount, "CUDA devices the runtime sees");
  m.def(
      "advantages",
      [](const std::string& dtype, const std::string& device, int64_t steps, int64_t batch,
         const py::list& inputs, const std::vector<int64_t>& strides, double gamma, double lam,
         const py::object& out_obj, uintptr_t stream, int nthread) {
        std::vector<uintptr_t> ptrs;
        for (const py::handle& x : inputs) ptrs.push_back(Address(x));
        const uintptr_t out = Address(out_obj);
        if (ptrs.size() != 5 || strides.size() != 10) {
          throw py::value_error("advantages takes 5 pointers and 10 strides");
        }
        if (device != "cpu" && device != "cuda") {
          throw py::value_error("device should be 'cpu' or 'cuda', got '" + device + "'");
        }
        if (dtype == "float32") {
          Run<float>(device, steps, batch, ptrs, strides, gamma, lam, out, stream, nthread);
        } else if (dtype == "float64") {
          Run<double>(device, steps, batch, ptrs, strides, gamma, lam, out, stream, nthread);
        } else {
          throw py::value_error("dtype should be float32 or float64, got " + dtype);
        }
      },
      "Raw advantage kernel; use metarobot.gae / metarobot.discounted_returns.");
}

}  // namespace metarobot
