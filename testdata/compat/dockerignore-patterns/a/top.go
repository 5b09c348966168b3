a/top.go
