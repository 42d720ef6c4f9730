// Registration functions of the binding files, called from the one module definition.
#ifndef METAROBOT_BINDINGS_H_
#define METAROBOT_BINDINGS_H_

#include <pybind11/pybind11.h>

namespace metarobot {

void BindGae(pybind11::module_& m);

}  // namespace metarobot

#endif  // METAROBOT_BINDINGS_H_
