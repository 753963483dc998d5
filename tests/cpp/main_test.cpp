// GoogleTest entry point: initializes the main interpreter once and runs the tests with the GIL released.
#include <Python.h>
#include <gtest/gtest.h>

#include "io_loop.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  Py_InitializeEx(0);
  subactor::IoLoop::Get();  // start the io thread now, so per-test thread counts have it in their baseline
  PyThreadState* main_tstate = PyEval_SaveThread();
  const int status = RUN_ALL_TESTS();
  PyEval_RestoreThread(main_tstate);
  if (Py_FinalizeEx() < 0) return 120;
  return status;
}
