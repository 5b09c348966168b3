a/b/c/deep.go
