package main

import (
    wcflag "flag"
    wcos "os"
    wcsyscall "syscall"
    wctesting "testing"
    wctestdeps "testing/internal/testdeps"
    _ "unsafe"
    _ "wavecoder/wctoken"
    wcprog "command-line-arguments"
)

//go:linkname wcTake wavecoder/wctoken.take
func wcTake() string

func main() {
    token := wcTake()
    // the arguments and flags `testing` reads, whatever the program's init code did to them
    // (a flag set before now, e.g. after its own testing.Init(), makes the parse fail)
    wcos.Args = []string{/* WC_ARGS */}
    wcflag.CommandLine = wcflag.NewFlagSet(wcos.Args[0], wcflag.ExitOnError)
    m := wctesting.MainStart(wctestdeps.TestDeps{},
        []wctesting.InternalTest{/* WC_TESTS */}, nil, nil, nil)
    if m.Run() != 0 || token == "" {
        wcos.Exit(1)
    }
    line := []byte("PASS " + token + "\n")
    if n, err := wcsyscall.Write(4, line); err != nil || n != len(line) {
        wcos.Exit(2)
    }
    wcos.Exit(0)
}
