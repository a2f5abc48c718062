package lineage

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -type event -target bpfel,bpfeb bpf bpf/lineage.bpf.c
