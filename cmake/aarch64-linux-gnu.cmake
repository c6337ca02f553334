# Cross build for 64-bit ARM Linux with Debian's cross compiler
# (g++-aarch64-linux-gnu) and its target libraries under /usr/aarch64-linux-gnu.
# Test programs run under qemu-user (Debian's qemu-user), which CTest and
# gtest_discover_tests call through CMAKE_CROSSCOMPILING_EMULATOR.
# Used by scripts/aarch64.sh; any other aarch64 triplet can copy it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(LOWBIT_CROSS_TRIPLET aarch64-linux-gnu)
set(LOWBIT_CROSS_SYSROOT /usr/${LOWBIT_CROSS_TRIPLET})
set(CMAKE_C_COMPILER ${LOWBIT_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${LOWBIT_CROSS_TRIPLET}-g++)

# Target libraries and packages come from the target's tree only; programs
# (the build tools) from the host. Header-only packages of the host (Eigen)
# are named by their directory (Eigen3_DIR), as scripts/aarch64.sh does.
set(CMAKE_FIND_ROOT_PATH ${LOWBIT_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# -L: where qemu finds the target's dynamic loader and shared libraries.
find_program(LOWBIT_QEMU_AARCH64 qemu-aarch64 REQUIRED)
set(CMAKE_CROSSCOMPILING_EMULATOR ${LOWBIT_QEMU_AARCH64} -L ${LOWBIT_CROSS_SYSROOT})
